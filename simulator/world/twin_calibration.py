"""How far the twin can be trusted: its estimates against the ground truth over a zoo (issue 12 item 6).

:func:`calibrate` compares, per metric, the twin's estimated relative effects (as the simulation stage
computes them) with the oracle's true effects over a set of candidates:

- **sign agreement**: the share of candidates whose twin effect has the sign of the true effect, counted
  only over candidates whose true sign is resolved (the truth's 95 % interval excludes 0; without
  intervals, every candidate);
- **Spearman's ρ** between twin and true effects (scipy.stats.spearmanr; average ranks for ties), with its
  p-value;
- **bias**: mean(twin − truth), and the mean absolute error.

:data:`RULE` says when a metric's calibration *supports* gating on it: at least ``min_candidates``
candidates, sign agreement ≥ ``min_sign_agreement`` and ρ ≥ ``min_spearman``. The thresholds are fixed
here, before any run, and not tuned to a zoo: with 10 candidates, 0.8 sign agreement is at most 2 wrong
signs, and ρ ≥ 0.6 is about the one-sided 5 % critical value of Spearman's ρ at n = 10 (0.564; Zar 1972).

The simulation stage reads a calibration record (:func:`load_record`: ``$STAGEGATE_TWIN_CALIBRATION``, else
the record shipped beside this module, written by ``benchmarks/twin_calibration.py``) and, through
:func:`restrict_gates`, lets a gate on a twin metric roll back only when that metric is supported; otherwise
its rollback actions become ``hold`` (a person decides). Gates on off-policy estimates (``metric:estimator``)
are not the twin's and are left as they are. No record means no support: every twin gate holds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

TWIN_METRICS = ("revenue_per_user", "purchases_per_user", "clicks_per_user")
RULE = {"min_candidates": 8, "min_sign_agreement": 0.8, "min_spearman": 0.6}
RECORD = Path(__file__).with_name("twin_calibration.json")
ENV = "STAGEGATE_TWIN_CALIBRATION"
ACTION_DEFAULTS = {"on_fail": "rollback", "on_inconclusive": "hold", "on_error": "rollback"}  # gates/base.py


@dataclass(frozen=True)
class MetricCalibration:
    """One metric's calibration over ``n`` candidates (see the module docstring)."""

    metric: str
    n: int
    n_signed: int  # candidates whose true sign is resolved
    sign_agreement: float
    spearman: float
    spearman_p: float
    bias: float
    mean_abs_error: float

    def supported(self, rule: Mapping[str, float] = RULE) -> tuple[bool, str]:
        """(supported, why) under ``rule``; NaN statistics never support."""
        why = []
        if self.n < rule["min_candidates"]:
            why.append(f"{self.n} candidates < {rule['min_candidates']}")
        if not self.sign_agreement >= rule["min_sign_agreement"]:
            why.append(f"sign agreement {self.sign_agreement:.2f} < {rule['min_sign_agreement']}")
        if not self.spearman >= rule["min_spearman"]:
            why.append(f"Spearman {self.spearman:.2f} < {rule['min_spearman']}")
        if why:
            return False, f"{self.metric}: twin calibration not supported ({'; '.join(why)})"
        return True, (
            f"{self.metric}: twin calibration supported (sign agreement {self.sign_agreement:.2f}, "
            f"Spearman {self.spearman:.2f}, n {self.n})"
        )


def calibrate(
    twin: Mapping[str, Mapping[str, float]],
    truth: Mapping[str, Mapping[str, float]],
    truth_ci: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    metrics: Sequence[str] = TWIN_METRICS,
) -> dict[str, MetricCalibration]:
    """Per metric, the twin's effects against the true ones over the candidates both name.

    ``twin`` and ``truth``: candidate -> metric -> relative effect; ``truth_ci``: candidate -> metric ->
    [lo, hi] (the truth's 95 % interval), used to count only resolved true signs. Candidates with a
    non-finite value for a metric are left out of that metric."""
    from scipy.stats import spearmanr

    names = sorted(set(twin) & set(truth))
    out = {}
    for m in metrics:
        est = np.array([twin[c].get(m, np.nan) for c in names], dtype=float)
        tru = np.array([truth[c].get(m, np.nan) for c in names], dtype=float)
        ok = np.isfinite(est) & np.isfinite(tru)
        est, tru = est[ok], tru[ok]
        kept = [c for c, k in zip(names, ok, strict=True) if k]
        if truth_ci is not None:
            ci = np.array([truth_ci[c].get(m, [np.nan, np.nan]) for c in kept], dtype=float).reshape(-1, 2)
            signed = (ci[:, 0] > 0) | (ci[:, 1] < 0)
        else:
            signed = tru != 0
        agree = np.sign(est[signed]) == np.sign(tru[signed])
        if est.size >= 3 and np.ptp(est) > 0 and np.ptp(tru) > 0:
            rho, p = spearmanr(est, tru)
        else:
            rho, p = np.nan, np.nan
        out[m] = MetricCalibration(
            metric=m,
            n=int(est.size),
            n_signed=int(signed.sum()),
            sign_agreement=float(agree.mean()) if agree.size else float("nan"),
            spearman=float(rho),
            spearman_p=float(p),
            bias=float(np.mean(est - tru)) if est.size else float("nan"),
            mean_abs_error=float(np.mean(np.abs(est - tru))) if est.size else float("nan"),
        )
    return out


def record(calibration: Mapping[str, MetricCalibration], **provenance: Any) -> dict[str, Any]:
    """The JSON record the simulation stage reads: rule, per-metric statistics and support, provenance."""
    return {
        "version": 1,
        "rule": dict(RULE),
        "metrics": {
            m: {**asdict(c), "supported": c.supported()[0], "why": c.supported()[1]}
            for m, c in calibration.items()
        },
        "provenance": provenance,
    }


def load_record(path: str | Path | None = None) -> dict[str, Any] | None:
    """The calibration record: ``path``, else ``$STAGEGATE_TWIN_CALIBRATION``, else the shipped one.

    A path that was named (argument or environment) must exist and parse: a missing or malformed named
    record raises ValueError naming the file. The shipped record missing means no calibration (None)."""
    named = path if path is not None else os.environ.get(ENV)
    target = Path(named) if named else RECORD
    if not target.exists():
        if named:
            raise ValueError(f"twin calibration record {target} does not exist")
        return None
    try:
        data = json.loads(target.read_text())
        metrics = data["metrics"]
        for row in metrics.values():
            MetricCalibration(**{k: row[k] for k in MetricCalibration.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"twin calibration record {target} is malformed: {exc}") from None
    data["path"] = str(target)
    return data


def support(data: Mapping[str, Any] | None, metric: str) -> tuple[bool, str]:
    """Whether ``data`` (a record, or None) supports gating on twin ``metric``, and why."""
    if data is None:
        return False, f"{metric}: no twin calibration record"
    row = data.get("metrics", {}).get(metric)
    if row is None:
        return False, f"{metric}: not in the twin calibration record"
    cal = MetricCalibration(**{k: row[k] for k in MetricCalibration.__dataclass_fields__})
    return cal.supported(data.get("rule", RULE))


def restrict_gates(
    gates: Sequence[Mapping[str, Any]], data: Mapping[str, Any] | None
) -> tuple[list[dict[str, Any]], list[str]]:
    """The simulation stage's gate entries with rollback turned into hold on twin metrics the calibration
    does not support; and one note per twin gate (supported or changed)."""
    out, notes = [], []
    for spec in gates:
        spec = dict(spec)
        metric = spec.get("metric")
        if not isinstance(metric, str) or ":" in metric or metric not in TWIN_METRICS:
            out.append(spec)
            continue
        ok, why = support(data, metric)
        if not ok:
            changed = [f for f, default in ACTION_DEFAULTS.items() if spec.get(f, default) == "rollback"]
            for f in changed:
                spec[f] = "hold"
            why += f"; {', '.join(changed)} -> hold" if changed else "; no rollback to restrict"
        notes.append(why)
        out.append(spec)
    return out, notes

"""The evidence a release manager reads before deciding: one report per promotion, built from the ledger.

Per stage the verdict table (every gate's latest look, and how many looks it took); for sequential gates a
plot of the relative effect and its confidence sequence per look, against the non-inferiority margin and
the harm boundary, clipped to the range that decides (:func:`sequential_axis_range`); the traffic ramp
(candidate share of requests over world time); per-segment metrics per arm within each ramp step, where
the comparison is fair, and, labelled as such, pooled over a stage's steps.

Pure of Prefect: :func:`build_report` reads the event store and returns markdown, self-contained HTML
(rendered from the markdown by markdown-it-py, figures inline) and PNG bytes; :func:`log_report` puts them
in an MLflow run. The flows layer publishes the Prefect artifact that links here. matplotlib and
markdown-it are imported lazily (matplotlib with the Agg backend: no display here, and ``stagegate
--help`` stays fast).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select

from stagegate.events.store import EventStore, events
from stagegate.logs import DEVICES, SEGMENTS

SLATE_K = 10
TRAFFIC_STAGES = ("shadow", "canary", "rollout")
STAGE_ORDER = ("offline", "simulation", "shadow", "canary", "rollout")


@dataclass
class EvidenceReport:
    """What one report holds. ``figures`` maps a file name (``*.png``) to its bytes."""

    title: str
    markdown: str
    html: str
    figures: dict[str, bytes] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """A short fingerprint of what was shown, recorded with every approval that read this report."""
        h = hashlib.sha256(self.markdown.encode())
        for name in sorted(self.figures):
            h.update(name.encode())
            h.update(self.figures[name])
        return h.hexdigest()[:16]


# -- tables -------------------------------------------------------------------------------------------------


def _stage_sort_key(stage: str) -> tuple[int, str]:
    base = stage.split("/", 1)[0]
    return (STAGE_ORDER.index(base) if base in STAGE_ORDER else len(STAGE_ORDER), stage)


def latest_verdicts(verdicts: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per stage, one row per gate: its latest look, with the number of looks it took."""
    out: dict[str, pd.DataFrame] = {}
    if verdicts.empty:
        return out
    for stage in sorted(verdicts["stage"].unique(), key=_stage_sort_key):
        rows = verdicts[verdicts["stage"] == stage]
        looks = rows.groupby("gate").size().rename("looks")
        last = rows.groupby("gate", sort=False).tail(1).set_index("gate")
        table = last.join(looks).reset_index()
        cols = ["gate", "outcome", "action", "statistic", "threshold", "ci_low", "ci_high", "n", "step"]
        cols += ["looks", "message"]
        out[stage] = table[[c for c in cols if c in table.columns]]
    return out


def effect_table(latest: pd.DataFrame) -> pd.DataFrame:
    """A stage's latest verdicts (:func:`latest_verdicts`) as a release manager reads them: gate, outcome,
    the measured effect (the gate's statistic), its interval, the users it rests on, the looks taken."""
    frame = latest.reindex(columns=["gate", "outcome", "statistic", "ci_low", "ci_high", "n", "looks"])
    interval = [
        "–" if pd.isna(lo) and pd.isna(hi) else f"{_fmt(lo)} to {_fmt(hi)}"
        for lo, hi in zip(frame["ci_low"], frame["ci_high"], strict=True)
    ]
    return pd.DataFrame(
        {
            "gate": frame["gate"],
            "outcome": frame["outcome"],
            "effect": frame["statistic"],
            "interval": interval,
            "n": frame["n"],
            "looks": frame["looks"],
        }
    )


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, float | np.floating):
        return f"{value:.4g}"
    return str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_(none)_"
    head = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = [
        "| " + " | ".join(_fmt(v).replace("|", "/").replace("\n", " ") for v in row) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([head, rule, *body])


def load_traffic_events(store: EventStore, promotion_id: str) -> pd.DataFrame:
    """The columns the report needs from every served request of the promotion (not the slates)."""
    cols = [
        events.c.stage,
        events.c.step,
        events.c.t,
        events.c.user_id,
        events.c.user_segment,
        events.c.device,
        events.c.arm,
        events.c.error,
        events.c.n_clicks,
        events.c.n_purchases,
        events.c.revenue,
        events.c.n_out_of_stock,
        events.c.shadow_n_out_of_stock,
    ]
    query = select(*cols).where(events.c.promotion_id == promotion_id).order_by(events.c.id)
    with store.engine.connect() as conn:
        return pd.read_sql(query, conn)


def _arm_rows(part: pd.DataFrame) -> dict[str, Any] | None:
    if part.empty:
        return None
    requests = len(part)
    users = part["user_id"].nunique()
    return {
        "users": users,
        "requests": requests,
        "revenue/user": float(part["revenue"].sum()) / users,
        "ctr": float(part["n_clicks"].sum()) / (requests * SLATE_K),
        "error rate": float(part["error"].mean()),
        "oos share": float(part["n_out_of_stock"].sum()) / (requests * SLATE_K),
    }


def _segment_rows(live: pd.DataFrame, keys: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per segment and arm of ``live`` (already one stage, or one step), labelled with ``keys``."""
    groupings: list[tuple[str, str, pd.Series]] = [("all", "all users", pd.Series(True, index=live.index))]
    groupings += [("user", name, live["user_segment"] == code) for code, name in enumerate(SEGMENTS)]
    groupings += [("device", name, live["device"] == code) for code, name in enumerate(DEVICES)]
    rows = []
    for _, name, mask in groupings:
        for arm in ("champion", "candidate"):
            values = _arm_rows(live[mask & (live["arm_name"] == arm)])
            if values is not None:
                rows.append({**keys, "segment": name, "arm": arm, **values})
    return rows


def _live(frame: pd.DataFrame) -> pd.DataFrame:
    live = frame[frame["stage"].isin(["canary", "rollout"])]
    return live.assign(
        arm_name=np.where(live["arm"] == 1, "candidate", "champion"),
        error=live["error"].astype(float),
    )


def segment_metrics(frame: pd.DataFrame) -> pd.DataFrame:
    """Per stage, segment and arm, POOLED over the stage's ramp steps: users, requests, revenue per user,
    CTR, error rate, out-of-stock share.

    Pooling mixes steps of unequal weight: at a 5% then 50% canary most candidate users come from the 50%
    step and most champion users from the 5% step (and a user can sit in both arms), so a pooled arm
    difference compares different periods and populations and can disagree with the gates, which judge
    each step on its own. :func:`segment_metrics_by_step` is the comparison to read; this is context.
    Users are the unit for revenue; CTR, error rate and out-of-stock share are pooled ratios over requests.
    Only stages where the candidate serves users (canary, rollout) are compared by arm.
    """
    live = _live(frame)
    rows: list[dict[str, Any]] = []
    for stage in [s for s in TRAFFIC_STAGES if s in set(live["stage"])]:
        rows += _segment_rows(live[live["stage"] == stage], {"stage": stage})
    return pd.DataFrame(rows)


def segment_metrics_by_step(
    frame: pd.DataFrame, weights: Mapping[tuple[str, int], float] | None = None
) -> pd.DataFrame:
    """Per stage, ramp step, segment and arm: the metrics of :func:`segment_metrics` within one step.

    Within a step the split is fixed, so champion and candidate are compared over the same period, as the
    gates compare them. ``weight`` is the candidate's planned share of users in % (:func:`step_weights`;
    NaN when the policy does not say), ``candidate share`` the share of the step's requests it served, and
    ``revenue/user change`` the candidate's revenue per user relative to the champion's in the same step
    and segment (NaN on champion rows, or without a champion)."""
    live = _live(frame)
    rows: list[dict[str, Any]] = []
    for stage in [s for s in TRAFFIC_STAGES if s in set(live["stage"])]:
        in_stage = live[live["stage"] == stage]
        for step in sorted(in_stage["step"].dropna().unique()):
            part = in_stage[in_stage["step"] == step]
            keys = {
                "stage": stage,
                "step": int(step),
                "weight": (weights or {}).get((stage, int(step)), float("nan")),
                "candidate share": float((part["arm"] == 1).mean()),
            }
            rows += _segment_rows(part, keys)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    champion = table[table["arm"] == "champion"].set_index(["stage", "step", "segment"])["revenue/user"]
    index = pd.MultiIndex.from_frame(table[["stage", "step", "segment"]])
    base = champion.reindex(index).to_numpy(float)
    change = np.where(
        (table["arm"] == "candidate").to_numpy() & (base > 0),
        table["revenue/user"].to_numpy(float) / np.where(base > 0, base, 1.0) - 1.0,
        np.nan,
    )
    return table.assign(**{"revenue/user change": change})


def traffic_ramp(frame: pd.DataFrame, bin_hours: float = 2.0) -> pd.DataFrame:
    """Candidate share of requests per ``bin_hours`` of world time, per stage (shadow: mirrored share)."""
    live = frame[frame["stage"].isin(TRAFFIC_STAGES)]
    if live.empty:
        return pd.DataFrame(columns=["stage", "hours", "candidate_share", "requests"])
    t0 = float(live["t"].min())
    hours = (live["t"].to_numpy(float) - t0) * 24.0
    mirrored = live["shadow_n_out_of_stock"].notna().to_numpy()
    share = np.where(live["stage"].to_numpy() == "shadow", mirrored, live["arm"].to_numpy() == 1)
    binned = pd.DataFrame(
        {
            "stage": live["stage"].to_numpy(),
            "hours": np.floor(hours / bin_hours) * bin_hours,
            "share": share.astype(float),
        }
    )
    ramp = (
        binned.groupby(["hours", "stage"], sort=True)
        .agg(candidate_share=("share", "mean"), requests=("share", "size"))
        .reset_index()
    )
    return ramp[["stage", "hours", "candidate_share", "requests"]]


# -- figures ------------------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def _sequential_specs(policy: Mapping[str, Any] | None) -> dict[tuple[str, str], dict[str, Any]]:
    """(stage, gate name) -> policy entry of every sequential gate, to draw its non-inferiority margin."""
    specs: dict[tuple[str, str], dict[str, Any]] = {}
    for stage, config in ((policy or {}).get("stages") or {}).items():
        for spec in (config or {}).get("gates", []) or []:
            if spec.get("type") == "sequential":
                name = spec.get("name") or f"sequential:{spec.get('metric')}"
                specs[(stage, name)] = spec
    return specs


def step_weights(policy: Mapping[str, Any] | None) -> dict[tuple[str, int], float]:
    """(stage, step number) -> the candidate's share of users in % as the policy planned it.

    The flows number canary steps from 1 in policy order and the rollout's single step 0 (weight one less
    the holdback): the numbers the ledger records with every event and verdict."""
    stages = (policy or {}).get("stages") or {}
    weights: dict[tuple[str, int], float] = {}
    for i, spec in enumerate((stages.get("canary") or {}).get("steps") or [], start=1):
        if isinstance(spec, Mapping) and spec.get("weight") is not None:
            weights[("canary", i)] = float(spec["weight"])
    if "rollout" in stages:
        holdback = float((stages.get("rollout") or {}).get("holdback") or 0.0)
        weights[("rollout", 0)] = 100.0 * (1.0 - holdback)
    return weights


def _signed(value: float) -> str:
    return "0" if abs(value) < 1e-12 else f"{value:+g}"


def _step_label(stage: str, step: Any, weights: Mapping[tuple[str, int], float]) -> str:
    if step is None or pd.isna(step):
        return stage
    weight = weights.get((stage.split("/", 1)[0], int(step)))
    name = "bake" if stage.startswith("rollout") else f"step {int(step)}"
    return f"{name} ({weight:g}%)" if weight is not None else name


#: An interval wider than this many times the median interval of its gate is a spike: clipped, not scaled to.
SPIKE_WIDTHS = 3.0


def sequential_axis_range(
    low: np.ndarray, high: np.ndarray, estimate: np.ndarray, lines: Sequence[float]
) -> tuple[float, float]:
    """A y range that shows what decides a sequential gate, not its widest early interval.

    An always-valid confidence sequence starts very wide (a few users, a prior that allows anything), and
    one such look used to set the whole axis and flatten every later interval to a line. The range
    therefore holds every interval no wider than ``SPIKE_WIDTHS`` times the median width (a spike is
    wider), the latest look's interval and estimate (what the verdict rests on) and the reference lines
    (0, margin, harm boundary), plus 15% on each side. Whatever lies beyond is clipped, and marked on
    the figure."""
    core: list[float] = [float(v) for v in lines if np.isfinite(v)]
    ok = np.isfinite(low) & np.isfinite(high)
    if ok.any():
        width = high[ok] - low[ok]
        typical = width <= SPIKE_WIDTHS * float(np.median(width))
        core += [float(low[ok][typical].min()), float(high[ok][typical].max())]
    for series in (low, high, estimate):
        last = series[np.isfinite(series)]
        if last.size:
            core.append(float(last[-1]))
    if not core:
        return (-1.0, 1.0)
    lo, hi = min(core), max(core)
    span = hi - lo
    if span <= 0:
        span = max(abs(hi), 1.0)
    return (lo - 0.15 * span, hi + 0.15 * span)


def sequential_plot(
    verdicts: pd.DataFrame,
    stage: str,
    gate: str,
    spec: Mapping[str, Any] | None = None,
    weights: Mapping[tuple[str, int], float] | None = None,
) -> Any:
    """The matplotlib figure of :func:`sequential_figure` (None without a measured look), for tests.

    Per look: the relative effect (candidate against champion, in %) and the confidence sequence the gate
    reported at that look, coloured by the look's outcome; lines at 0, the non-inferiority margin (PASS
    once the lower bound clears it) and the harm boundary (FAIL once the upper bound falls below it); ramp
    steps shaded and labelled. The y range is :func:`sequential_axis_range`; clipped ends are arrows with
    their value written next to them, so a clipped look is never mistaken for a short interval."""
    rows = verdicts[(verdicts["stage"] == stage) & (verdicts["gate"] == gate)]
    rows = rows[rows["statistic"].notna()]
    if rows.empty:
        return None
    spec = spec or {}
    relative = bool(spec.get("relative", True))
    scale = 100.0 if relative else 1.0
    unit = "%" if relative else ""
    metric = str(rows["metric"].dropna().iloc[-1]) if rows["metric"].notna().any() else gate
    x = rows["look"].to_numpy(float) if "look" in rows and rows["look"].notna().all() else None
    if x is None or len(set(x)) != len(x):
        x = np.arange(1, len(rows) + 1, dtype=float)
    est = rows["statistic"].to_numpy(float) * scale
    low = rows["ci_low"].to_numpy(float) * scale
    high = rows["ci_high"].to_numpy(float) * scale
    harm_values = rows["threshold"].dropna()
    harm = float(harm_values.iloc[-1]) * scale if not harm_values.empty else None
    if harm is None and spec.get("harm_margin") is not None:
        harm = -float(spec["harm_margin"]) * scale
    margin = -float(spec["mde"]) * scale if spec.get("mde") is not None else None
    lines = [0.0, *(v for v in (harm, margin) if v is not None)]
    ymin, ymax = sequential_axis_range(low, high, est, lines)

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.8))
    steps = rows["step"].to_numpy() if "step" in rows else np.zeros(len(rows))
    starts = [0, *(int(i) + 1 for i in np.flatnonzero(steps[1:] != steps[:-1]))]
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(rows)
        left, right = x[start] - 0.5, x[end - 1] + 0.5
        if k % 2:
            ax.axvspan(left, right, color="0.93", zorder=0)
        if k:
            ax.axvline(left, color="0.5", lw=0.8, ls="-.", zorder=1)
        ax.text(
            (left + right) / 2,
            1.01,
            _step_label(stage, steps[start], weights or {}),
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=8,
            color="0.3",
        )
    ax.axhline(0.0, color="0.4", lw=0.9, label="no change", zorder=1)
    if margin is not None:
        ax.axhline(
            margin, color="tab:green", ls=":", lw=1.6, label=f"non-inferiority margin {margin:+g}{unit}"
        )
    if harm is not None:
        ax.axhline(harm, color="tab:red", ls="--", lw=1.2, label=f"harm boundary {_signed(harm)}{unit}")

    colors = {"PASS": "tab:green", "FAIL": "tab:red", "INCONCLUSIVE": "tab:blue", "ERROR": "black"}
    outcome_colors = [colors.get(str(o), "black") for o in rows["outcome"]]
    shown_low, shown_high = np.clip(low, ymin, ymax), np.clip(high, ymin, ymax)
    ok = np.isfinite(low) & np.isfinite(high)
    ax.vlines(x[ok], shown_low[ok], shown_high[ok], colors=np.array(outcome_colors)[ok], lw=2.2, zorder=2)
    ax.plot(x, np.clip(est, ymin, ymax), color="0.35", lw=0.8, zorder=2)
    ax.scatter(x, np.clip(est, ymin, ymax), c=outcome_colors, s=26, zorder=3, edgecolors="white")
    for outcome, color in colors.items():
        if (rows["outcome"] == outcome).any():
            ax.plot([], [], color=color, lw=2.2, marker="o", label=f"look: {outcome}")
    span = ymax - ymin
    for xi, value, bound, marker, va in [
        *((xi, v, ymax, "^", "bottom") for xi, v in zip(x, high, strict=True) if v > ymax),
        *((xi, v, ymin, "v", "top") for xi, v in zip(x, low, strict=True) if v < ymin),
    ]:
        inset = bound - 0.02 * span if marker == "^" else bound + 0.02 * span
        ax.plot([xi], [inset], marker=marker, color="0.2", ms=7, zorder=4, gid=f"clipped-{va}")
        ax.annotate(
            f"{value:+.3g}{unit}",
            (xi, inset),
            xytext=(5, 0),
            textcoords="offset points",
            fontsize=7,
            va="center",
            color="0.2",
        )
    if ((high > ymax) | (low < ymin)).any():
        ax.plot([], [], marker="^", color="0.2", ls="none", label="clipped end (value written)")
    ax.set_ylim(ymin, ymax)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(x[0] - 0.6, x[-1] + 0.6)
    direction = spec.get("direction", "increase")
    what = "relative change" if relative else "change"
    if direction == "decrease":
        what = "relative improvement" if relative else "improvement"
    ax.set_ylabel(
        f"{what} in {metric}"
        + (" (%)" if relative else "")
        + ("\n(lower is better)" if direction == "decrease" else "")
    )
    ax.set_xlabel("look (shaded bands and dash-dot lines: ramp steps)")
    ax.set_title(f"{stage}: {gate}, candidate vs champion, with its confidence sequence", fontsize=10, pad=16)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.grid(alpha=0.3, axis="y")
    return fig


def sequential_figure(
    verdicts: pd.DataFrame,
    stage: str,
    gate: str,
    spec: Mapping[str, Any] | None = None,
    weights: Mapping[tuple[str, int], float] | None = None,
) -> bytes | None:
    """:func:`sequential_plot` as PNG bytes (None when the gate never measured an effect)."""
    fig = sequential_plot(verdicts, stage, gate, spec, weights)
    return None if fig is None else _png(fig)


def ramp_figure(ramp: pd.DataFrame) -> bytes | None:
    if ramp.empty:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for stage, rows in ramp.groupby("stage", sort=False):
        style = "--" if stage == "shadow" else "-"
        ax.step(rows["hours"], 100 * rows["candidate_share"], where="post", ls=style, label=str(stage))
    ax.set_xlabel("world time since the first live request (hours)")
    ax.set_ylabel("candidate share of requests (%)")
    ax.set_ylim(-2, 102)
    ax.set_title("traffic ramp (shadow: share of requests mirrored)")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


ARM_COLORS = {"champion": "tab:blue", "candidate": "tab:orange"}


def segment_figure(segments: pd.DataFrame, metric: str = "revenue/user") -> bytes | None:
    """``metric`` by segment and arm, one panel per stage, or per ramp step when ``segments`` has steps."""
    if segments.empty:
        return None
    plt = _pyplot()
    keys = ["stage", "step"] if "step" in segments else ["stage"]
    panels = list(segments.groupby(keys, sort=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (key, rows) in zip(axes[0], panels, strict=True):
        part = rows.pivot_table(index="segment", columns="arm", values=metric, sort=False)
        part = part[[c for c in ("champion", "candidate") if c in part.columns]]
        part.plot.bar(ax=ax, rot=30, color=[ARM_COLORS[c] for c in part.columns])
        if "step" in segments:
            stage, step = key
            weight = rows["weight"].iloc[0]
            name = "bake" if stage == "rollout" else f"step {step}"
            label = f"{stage} {name}" + (f" ({weight:g}%)" if pd.notna(weight) else "")
        else:
            label = f"{key[0] if isinstance(key, tuple) else key} (pooled over steps)"
        ax.set_title(f"{label}: {metric}", fontsize=9)
        ax.set_xlabel("")
        ax.grid(alpha=0.3, axis="y")
    return _png(fig)


# -- the report ---------------------------------------------------------------------------------------------


def build_report(
    store: EventStore,
    promotion_id: str,
    *,
    title: str | None = None,
    links: Mapping[str, str] | None = None,
    note: str | None = None,
) -> EvidenceReport:
    """Everything the ledger knows about one promotion, as markdown, HTML and PNG figures."""
    promotion = store.promotion(promotion_id)
    policy = promotion.get("policy") or {}
    title = title or f"Evidence: {promotion['model']} v{promotion['version']}"
    verdicts = store.verdicts(promotion_id)
    traffic = load_traffic_events(store, promotion_id)
    figures: dict[str, bytes] = {}
    tables: dict[str, pd.DataFrame] = {}

    md = [f"# {title}", ""]
    champion = promotion.get("champion_version")
    md.append(
        f"Candidate **v{promotion['version']}** against champion "
        f"**{'v' + champion if champion else '(none)'}**; state **{promotion['state']}**"
        + (f" in {promotion['stage']}" if promotion.get("stage") else "")
        + f". Promotion `{promotion_id}`."
    )
    if note:
        md += ["", note]
    if links:
        md += ["", *[f"- [{label}]({url})" for label, url in links.items()]]

    md += ["", "## Verdicts per stage", ""]
    per_stage = latest_verdicts(verdicts)
    if not per_stage:
        md.append("_No gate has judged yet._")
    for stage, table in per_stage.items():
        tables[f"verdicts-{stage.replace('/', '-')}"] = table
        label = stage.replace("/monitor", " (guardrail monitor, while waiting for approval)")
        md += [f"### {label}", "", markdown_table(table), ""]

    specs = _sequential_specs(policy)
    weights = step_weights(policy)
    sequential = verdicts[verdicts["gate"].str.startswith("sequential")] if not verdicts.empty else verdicts
    if not sequential.empty:
        md += [
            "## Sequential gates over time",
            "",
            "Each look's relative effect (candidate against champion) and the confidence sequence the gate "
            "reported at that look. PASS needs the lower bound above the non-inferiority margin; FAIL, the "
            "upper bound below the harm boundary. The axis is clipped to the range that decides; an arrow "
            "marks a clipped end and gives its value.",
            "",
        ]
        for (stage, gate), _ in sequential.groupby(["stage", "gate"], sort=False):
            png = sequential_figure(verdicts, stage, gate, specs.get((stage.split("/")[0], gate)), weights)
            if png is None:
                continue
            name = f"sequential-{stage.replace('/', '-')}-{gate.replace(':', '-').replace('@', '-')}.png"
            figures[name] = png
            md += [f"![{stage} {gate}]({name})", ""]

    ramp = traffic_ramp(traffic)
    md += ["## Traffic ramp", ""]
    if ramp.empty:
        md.append("_No live traffic yet._")
    else:
        figures["traffic-ramp.png"] = ramp_figure(ramp)  # type: ignore[assignment]
        tables["traffic-ramp"] = ramp
        summary = ramp.groupby("stage", sort=False).agg(
            hours=("hours", lambda h: float(h.max() - h.min())),
            max_share=("candidate_share", "max"),
            requests=("requests", "sum"),
        )
        md += ["![traffic ramp](traffic-ramp.png)", "", markdown_table(summary.reset_index()), ""]

    md += _segment_sections(traffic, weights, figures, tables)
    markdown = "\n".join(md)
    return EvidenceReport(title, markdown, _html(title, markdown, figures), figures, tables)


SEGMENT_COLUMNS = ["segment", "arm", "users", "requests", "revenue/user", "revenue/user change", "ctr"]
SEGMENT_COLUMNS += ["error rate", "oos share"]


def _pct(value: Any) -> str:
    return "–" if value is None or pd.isna(value) else f"{100 * float(value):+.1f}%"


def _segment_sections(
    traffic: pd.DataFrame,
    weights: Mapping[tuple[str, int], float],
    figures: dict[str, bytes],
    tables: dict[str, pd.DataFrame],
) -> list[str]:
    """Per ramp step, segment and arm; then, for stages of several steps, the pooled table, labelled."""
    md = ["## Per-segment metrics per ramp step", ""]
    by_step = segment_metrics_by_step(traffic, weights)
    if by_step.empty:
        return [*md, "_No candidate traffic yet._", ""]
    md += [
        "Within a step the split is fixed, so both arms are compared over the same period, as the gates "
        "compare them. Users are the unit for revenue; CTR, error rate and out-of-stock share are ratios "
        "pooled over requests. _revenue/user change_: the candidate's revenue per user against the "
        "champion's in the same step and segment (raw, not the gate's adjusted estimate).",
        "",
    ]
    tables["segments"] = by_step
    figures["segments-revenue.png"] = segment_figure(by_step)  # type: ignore[assignment]
    for (stage, step), rows in by_step.groupby(["stage", "step"], sort=False):
        weight = rows["weight"].iloc[0]
        name = "bake" if stage == "rollout" else f"step {step}"
        planned = f"{weight:g}% of users planned for the candidate, " if pd.notna(weight) else ""
        share = f"{100 * rows['candidate share'].iloc[0]:.1f}% of requests served by it"
        md += [f"### {stage} {name}", "", f"{planned}{share}.", ""]
        shown = rows.reindex(columns=SEGMENT_COLUMNS).assign(
            **{"revenue/user change": rows["revenue/user change"].map(_pct)}
        )
        md += [markdown_table(shown), ""]
    md += ["![revenue per user by segment, per step](segments-revenue.png)", ""]

    steps_per_stage = by_step.groupby("stage")["step"].nunique()
    multi = [s for s in steps_per_stage.index if steps_per_stage[s] > 1]
    if multi:
        pooled = segment_metrics(traffic[traffic["stage"].isin(multi)])
        tables["segments-pooled"] = pooled
        md += [
            "## Pooled over ramp steps of unequal weight (context, not the comparison)",
            "",
            f"{', '.join(multi)}: all steps together. Most candidate users come from the larger steps and "
            "most champion users from the smaller ones, over different periods, and a user moved to the "
            "candidate at a step change counts in both arms; so a pooled difference can disagree with the "
            "per-step tables and with the gates' verdicts, which judge each step on its own.",
            "",
            markdown_table(
                pooled.reindex(columns=["stage", *SEGMENT_COLUMNS]).drop(columns="revenue/user change")
            ),
            "",
        ]
    return md


REPORT_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .85em; display: block;
        overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; height: auto; display: block; margin: .5em 0 1.5em; }
code { background: #f4f4f4; padding: 0 .25em; }
"""


def _html(title: str, markdown: str, figures: Mapping[str, bytes]) -> str:
    """The markdown rendered to a self-contained HTML page (markdown-it-py, CommonMark with tables).

    Raw HTML in the source is off, so a gate message, metric name or reason that contains markup is shown
    as text, never run; figures referenced by name are inlined as base64 PNG so the one file is the
    whole report (MLflow's artifact view, a mail attachment)."""
    from markdown_it import MarkdownIt

    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = parser.parse(markdown)
    for token in tokens:
        for child in token.children or []:
            if child.type == "image" and str(child.attrGet("src")) in figures:
                data = base64.b64encode(figures[str(child.attrGet("src"))]).decode()
                child.attrSet("src", f"data:image/png;base64,{data}")
    body = parser.renderer.render(tokens, parser.options, {})
    return (
        f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{REPORT_CSS}</style></head>\n<body>\n{body}</body></html>\n"
    )


def log_report(report: EvidenceReport, client: Any, run_id: str, artifact_dir: str) -> list[str]:
    """Log the report (markdown, HTML, PNGs, CSV tables) under ``artifact_dir`` of an MLflow run."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="stagegate-evidence-") as tmp:
        folder = Path(tmp)
        (folder / "report.md").write_text(report.markdown, encoding="utf-8")
        (folder / "report.html").write_text(report.html, encoding="utf-8")
        for name, data in report.figures.items():
            (folder / name).write_bytes(data)
        for name, table in report.tables.items():
            table.to_csv(folder / f"{name}.csv", index=False)
        names = sorted(p.name for p in folder.iterdir())
        client.log_artifacts(run_id, str(folder), artifact_path=artifact_dir)
    return [f"{artifact_dir}/{name}" for name in names]

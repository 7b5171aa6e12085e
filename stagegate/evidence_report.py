"""The evidence a release manager reads before deciding: one report per promotion, built from the ledger.

Per stage the verdict table (every gate's latest look, and how many looks it took); for sequential gates a
plot of the estimate and its confidence sequence against the harm and non-inferiority boundaries over the
looks; the traffic ramp (candidate share of requests over world time); per-segment metrics per arm.

Pure of Prefect: :func:`build_report` reads the event store and returns markdown, HTML and PNG bytes;
:func:`log_report` puts them in an MLflow run. The flows layer publishes the Prefect artifact that links here.
matplotlib is imported lazily with the Agg backend (no display here, and ``stagegate --help`` stays fast).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
from collections.abc import Mapping
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


def segment_metrics(frame: pd.DataFrame) -> pd.DataFrame:
    """Per stage, segment and arm: users, requests, revenue per user, CTR, error rate, out-of-stock share.

    Users are the unit for revenue; CTR, error rate and out-of-stock share are pooled ratios over requests.
    Only stages where the candidate serves users (canary, rollout) are compared by arm.
    """
    live = frame[frame["stage"].isin(["canary", "rollout"])]
    if live.empty:
        return pd.DataFrame()
    live = live.assign(
        arm_name=np.where(live["arm"] == 1, "candidate", "champion"),
        error=live["error"].astype(float),
    )
    rows = []
    groupings: list[tuple[str, str, pd.Series]] = [("all", "all", pd.Series(True, index=live.index))]
    groupings += [("user", name, live["user_segment"] == code) for code, name in enumerate(SEGMENTS)]
    groupings += [("device", name, live["device"] == code) for code, name in enumerate(DEVICES)]
    for stage in [s for s in TRAFFIC_STAGES if s in set(live["stage"])]:
        in_stage = live["stage"] == stage
        for kind, name, mask in groupings:
            for arm in ("champion", "candidate"):
                part = live[in_stage & mask & (live["arm_name"] == arm)]
                if part.empty:
                    continue
                requests = len(part)
                users = part["user_id"].nunique()
                rows.append(
                    {
                        "stage": stage,
                        "segment": name if kind != "all" else "all users",
                        "arm": arm,
                        "users": users,
                        "requests": requests,
                        "revenue/user": float(part["revenue"].sum()) / users,
                        "ctr": float(part["n_clicks"].sum()) / (requests * SLATE_K),
                        "error rate": float(part["error"].mean()),
                        "oos share": float(part["n_out_of_stock"].sum()) / (requests * SLATE_K),
                    }
                )
    return pd.DataFrame(rows)


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


def sequential_figure(
    verdicts: pd.DataFrame, stage: str, gate: str, spec: Mapping[str, Any] | None = None
) -> bytes | None:
    """Estimate and confidence sequence per look against the harm boundary (and the margin, if known)."""
    rows = verdicts[(verdicts["stage"] == stage) & (verdicts["gate"] == gate)]
    rows = rows[rows["statistic"].notna()]
    if rows.empty:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    x = np.arange(1, len(rows) + 1)
    est = rows["statistic"].to_numpy(float)
    low = rows["ci_low"].to_numpy(float)
    high = rows["ci_high"].to_numpy(float)
    ax.fill_between(x, low, high, alpha=0.25, color="tab:blue", label="confidence sequence")
    ax.plot(x, est, marker="o", color="tab:blue", label="estimate")
    harm = rows["threshold"].dropna()
    if not harm.empty:
        ax.axhline(float(harm.iloc[-1]), color="tab:red", ls="--", label="harm boundary")
    if spec is not None and spec.get("mde") is not None:
        ax.axhline(-float(spec["mde"]), color="tab:green", ls=":", label="non-inferiority margin")
    ax.axhline(0.0, color="grey", lw=0.8)
    for boundary in np.flatnonzero(np.diff(rows["step"].to_numpy()) != 0):
        ax.axvline(boundary + 1.5, color="grey", lw=0.6, ls="-.")
    colors = {"PASS": "tab:green", "FAIL": "tab:red", "INCONCLUSIVE": "tab:grey", "ERROR": "black"}
    ax.scatter(x, est, c=[colors.get(o, "black") for o in rows["outcome"]], zorder=3, s=18)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("look (dash-dot lines: new ramp step)")
    ax.set_ylabel(str(rows["metric"].iloc[-1] or gate))
    ax.set_title(f"{stage}: {gate}")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


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


def segment_figure(segments: pd.DataFrame, metric: str = "revenue/user") -> bytes | None:
    if segments.empty:
        return None
    plt = _pyplot()
    stages = list(dict.fromkeys(segments["stage"]))
    fig, axes = plt.subplots(1, len(stages), figsize=(4.5 * len(stages), 3.4), squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=True):
        part = segments[segments["stage"] == stage].pivot_table(
            index="segment", columns="arm", values=metric, sort=False
        )
        part.plot.bar(ax=ax, rot=30)
        ax.set_title(f"{stage}: {metric} by segment")
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
    sequential = verdicts[verdicts["gate"].str.startswith("sequential")] if not verdicts.empty else verdicts
    if not sequential.empty:
        md += ["## Sequential gates over time", ""]
        for (stage, gate), _ in sequential.groupby(["stage", "gate"], sort=False):
            png = sequential_figure(verdicts, stage, gate, specs.get((stage.split("/")[0], gate)))
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

    segments = segment_metrics(traffic)
    md += ["## Per-segment metrics (users are the unit; ratios pooled over requests)", ""]
    if segments.empty:
        md.append("_No candidate traffic yet._")
    else:
        tables["segments"] = segments
        figures["segments-revenue.png"] = segment_figure(segments)  # type: ignore[assignment]
        md += [markdown_table(segments), "", "![segments](segments-revenue.png)", ""]

    markdown = "\n".join(md)
    return EvidenceReport(title, markdown, _html(title, markdown, figures), figures, tables)


def _html(title: str, markdown: str, figures: Mapping[str, bytes]) -> str:
    """A self-contained HTML page: the markdown as preformatted text with the figures inlined."""
    imgs = "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(data).decode()}"/><figcaption>{html.escape(name)}</figcaption></figure>'
        for name, data in figures.items()
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body><pre style='white-space:pre-wrap'>{html.escape(markdown)}</pre>{imgs}</body></html>"
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

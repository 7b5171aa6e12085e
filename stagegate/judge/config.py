"""What the judge serves: one stage's gates from a policy, a MetricSource from a connections file.

``stagegate judge serve --policy P --stage canary --connections C --state URL`` builds a
:class:`JudgeSetup` here before the server starts; every problem (a policy or connections file that does
not validate, a stage the policy does not configure or that has no gates, a metrics adapter that cannot
be built) raises :class:`JudgeConfigError` naming the file and field, and the server does not start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from stagegate.policy.gates import StageGates
from stagegate.ports import MetricSource
from stagegate.problems import Problem, ProblemsError

#: The judge's state database when ``--state`` is not given: a SQLite file in the workspace folder.
DEFAULT_STATE_FILE = "judge.db"
#: Width of the look grid: a call's window ends at ``now`` rounded down to it, so retries within one slot
#: judge the same window (and are not a new look).
DEFAULT_LOOK_EVERY = timedelta(seconds=60)


class JudgeConfigError(ProblemsError):
    """The judge cannot start: every problem names the file, field and reason."""


class _NoWorkspace:
    """The host handed to adapters: the judge has no workspace, so an adapter that would fall back on one
    (the ``events`` source without ``url``) is refused with a message saying what to set."""

    def __getattr__(self, name: str) -> Any:
        raise JudgeConfigError(
            [
                Problem(
                    "<connections>",
                    "metrics",
                    f"the judge has no workspace ({name!r} asked for): give the metric source's own "
                    "settings, e.g. metrics.url for the events adapter",
                )
            ]
        )


@dataclass(frozen=True)
class JudgeSetup:
    """The stage the judge applies and where it reads evidence from."""

    policy_file: str
    stage_name: str
    stage: Any  # the policy's stage model (stagegate.policy.schema)
    gates: StageGates
    metrics: MetricSource
    look_every: timedelta = DEFAULT_LOOK_EVERY

    def last_step(self, step: int | None) -> bool:
        """Whether ``step`` is the stage's last canary step (no step given, or no steps: the last)."""
        steps = getattr(self.stage, "steps", None)
        return step is None or not steps or step >= len(steps) - 1

    def min_users(self, step: int | None) -> int | None:
        """The canary step's ``min_users`` (candidate users before the step may advance), if any."""
        steps = getattr(self.stage, "steps", None)
        if step is None or not steps or not 0 <= step < len(steps):
            return None
        return steps[step].min_users


def default_state_url() -> str:
    root = Path(os.environ.get("STAGEGATE_HOME") or ".stagegate").resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / DEFAULT_STATE_FILE}"


def load_setup(
    policy_file: str | Path,
    stage_name: str,
    connections_file: str | Path | None,
    *,
    look_every: timedelta = DEFAULT_LOOK_EVERY,
) -> JudgeSetup:
    """Validate the policy and connections files and build the stage's gates and the MetricSource."""
    from stagegate.connections import load_connections
    from stagegate.policy import load_policy
    from stagegate.policy.gates import configure_stage

    if look_every <= timedelta(0):
        raise JudgeConfigError([Problem("<command line>", "look-every", "must be positive")])
    policy = load_policy(policy_file)  # PolicyError names file, field and reason
    stage = getattr(policy.stages, stage_name, None)
    if stage is None:
        configured = ", ".join(name for name, _ in policy.stages.configured())
        raise JudgeConfigError(
            [
                Problem(
                    str(policy_file),
                    f"stages.{stage_name}",
                    f"the policy does not configure this stage (configured: {configured})",
                )
            ]
        )
    if not stage.gates:
        raise JudgeConfigError(
            [Problem(str(policy_file), f"stages.{stage_name}.gates", "no gates: nothing to judge with")]
        )
    gates = configure_stage(stage)
    if connections_file is None:
        raise JudgeConfigError(
            [Problem("<command line>", "connections", "the judge needs a connections file (--connections)")]
        )
    connections = load_connections(connections_file)  # ConnectionsError names file, field and reason
    try:
        metrics = connections.build("metrics", _NoWorkspace())
    except JudgeConfigError as exc:
        raise JudgeConfigError(
            [Problem(str(connections_file), p.field, p.reason) for p in exc.problems]
        ) from exc
    return JudgeSetup(str(policy_file), stage_name, stage, gates, metrics, look_every)

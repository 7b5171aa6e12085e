"""Run promotions in this process with the adapters of ``$STAGEGATE_CONNECTIONS`` and report.

``python -m tests.proof.drive_promotions MODEL POLICY VERSION...`` promotes each version in turn through
``flows.promote.promote`` and prints one line ``RESULT {json}`` at the end: per version the promotion's
result and the split the traffic port reads right after it, and ``sorted(sys.modules)``: every module this
process imported while the flows ran (the proof that no simulator module was needed).

``--deferring CONNECTIONS VERSION`` adds a last promotion with the adapters of CONNECTIONS (a wall clock
that never blocks): every look is deferred, and the promotion is resumed from the ledger
(flows.resume.resume_promotion) each time its look is due, until it ends.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any


def _resumed(result: Any) -> tuple[Any, list[dict[str, Any]]]:
    """Resume a deferred promotion from the ledger each time its look is due, until it ends."""
    from flows.resume import resume_promotion

    deferrals = []
    while result.outcome == "deferred":
        deferrals.append({"stage": result.stage, "resume_at": result.resume_at})
        due = datetime.fromisoformat(result.resume_at)
        time.sleep(max((due - datetime.now(UTC)).total_seconds(), 0.0) + 0.05)
        result = resume_promotion(promotion_id=result.promotion_id)
    return result, deferrals


def main(argv: list[str] | None = None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    deferring: tuple[str, str] | None = None
    if (
        "--deferring" in args
    ):  # --deferring CONNECTIONS VERSION: a last promotion on a clock that never blocks
        at = args.index("--deferring")
        deferring = (args[at + 1], args[at + 2])
        del args[at : at + 3]
    model, policy, *versions = args
    from flows import context
    from flows.promote import promote

    runs = []
    plan = [(v, None) for v in versions] + ([(deferring[1], deferring[0])] if deferring else [])
    for version, connections in plan:
        if connections is not None:  # the adapters of another connections file from here on
            os.environ["STAGEGATE_CONNECTIONS"] = connections
            context.runtime.cache_clear()
        started = time.monotonic()
        result, deferrals = _resumed(promote(model=model, version=version, policy=policy))
        split = context.runtime().traffic.get_split()
        runs.append(
            {
                "result": result.model_dump(mode="json"),
                "split": split.model_dump(mode="json"),
                "seconds": round(time.monotonic() - started, 1),
                "deferrals": deferrals,
            }
        )
    print("RESULT " + json.dumps({"runs": runs, "modules": sorted(sys.modules)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

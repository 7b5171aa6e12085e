"""Run promotions in this process with the adapters of ``$STAGEGATE_CONNECTIONS`` and report.

``python -m tests.proof.drive_promotions MODEL POLICY VERSION...`` promotes each version in turn through
``flows.promote.promote`` and prints one line ``RESULT {json}`` at the end: per version the promotion's
result and the split the traffic port reads right after it, and ``sorted(sys.modules)``: every module this
process imported while the flows ran (the proof that no simulator module was needed).
"""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    model, policy, *versions = argv if argv is not None else sys.argv[1:]
    from flows.context import runtime
    from flows.promote import promote

    runs = []
    for version in versions:
        started = time.monotonic()
        result = promote(model=model, version=version, policy=policy)
        split = runtime().traffic.get_split()
        runs.append(
            {
                "result": result.model_dump(mode="json"),
                "split": split.model_dump(mode="json"),
                "seconds": round(time.monotonic() - started, 1),
            }
        )
    print("RESULT " + json.dumps({"runs": runs, "modules": sorted(sys.modules)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

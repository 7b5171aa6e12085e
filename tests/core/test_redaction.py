"""Credentials never reach what the stack writes or prints: stack.json, exports, logged command lines."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from stagegate.events.store import EventStore
from stagegate.stack import Stack, _redact, shell_exports
from stagegate.workspace import Workspace

SECRET = "s3cr:et@pw"  # a colon and an at sign, as real passwords have


def test_a_postgres_password_goes_to_a_private_pgpass_file_not_to_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stagegate.stack as stack_module

    created: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(stack_module, "_create_databases", lambda url, names: created.append((url, names)))
    stack = Stack(Workspace.from_env(tmp_path / "ws"))
    quoted = SECRET.replace(":", "%3A").replace("@", "%40")
    dbs = stack._databases(f"postgresql://alice:{quoted}@db.example:6543/postgres", registry_on_postgres=True)
    assert created and quoted in created[0][0]  # the databases are created with the real credentials
    assert len(dbs) == 3
    for url in dbs.values():
        assert quoted not in url and SECRET not in url and "alice@db.example:6543" in url
    pgpass = stack.pgpass_path
    assert stat.S_IMODE(pgpass.stat().st_mode) == 0o600
    lines = pgpass.read_text().splitlines()
    assert r"db.example:6543:stagegate_events:alice:s3cr\:et@pw" in lines
    assert stack._pg_env() == {"PGPASSFILE": str(pgpass)}
    # without a password the file goes away, so no stale secret lingers
    stack._databases("postgresql://alice@db.example:6543/postgres")
    assert not pgpass.exists() and stack._pg_env() == {}


def test_exports_redact_any_url_with_a_password() -> None:
    env = {"STAGEGATE_EVENTS_URL": "postgresql+psycopg://bob:hunter2@h:5432/e", "X": "plain value"}
    out = shell_exports(env)
    assert "hunter2" not in out and "postgresql+psycopg://bob@h:5432/e" in out and "plain value" in out
    assert _redact("mlflow server --backend-store-uri") == "mlflow server --backend-store-uri"


def test_the_store_never_shows_its_password(postgres_url: str) -> None:
    """The machine's PostgreSQL trusts local connections, so a password in the URL is accepted and unused."""
    url = postgres_url.replace("postgres@", "postgres:topsecret@", 1)
    store = EventStore(url)
    assert "topsecret" not in repr(store) and "***" in repr(store)
    store.engine.dispose()


# --- flow-run parameters, deployments, messages (stagegate.redaction) ------------------------------------

PG_SECRET = "hunter2"


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgresql+psycopg://bob:hunter2@h:5432/e", "postgresql+psycopg://bob@h:5432/e"),
        ("http://u:p%40ss@mlflow:5000", "http://u@mlflow:5000"),
        ("https://hooks.example/x?token=abc&channel=ops", "https://hooks.example/x?token=***&channel=ops"),
        ("sqlite:////tmp/ws/events.db", "sqlite:////tmp/ws/events.db"),  # unchanged, not respelled
        ("postgresql://alice@db:5432/x", "postgresql://alice@db:5432/x"),
        ("policies/demo.yaml", "policies/demo.yaml"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    from stagegate.redaction import has_credentials, redact_url

    assert redact_url(url) == redacted
    assert has_credentials(url) == (url != redacted)


def test_redact_text_hides_passwords_of_urls_in_messages() -> None:
    from stagegate.redaction import redact_text

    line = "could not connect to postgresql+psycopg://bob:hunter2@h:5432/e (timeout)"
    assert redact_text(line) == "could not connect to postgresql+psycopg://bob@h:5432/e (timeout)"


@pytest.fixture
def credentialed_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from flows.context import runtime

    monkeypatch.setenv("STAGEGATE_HOME", str(tmp_path / "ws"))
    monkeypatch.delenv("STAGEGATE_CONNECTIONS", raising=False)
    monkeypatch.setenv("STAGEGATE_EVENTS_URL", f"postgresql+psycopg://bob:{PG_SECRET}@db:5432/events")
    monkeypatch.setenv("STAGEGATE_MLFLOW_URI", f"http://ml:{PG_SECRET}@mlflow:5000")
    monkeypatch.setenv("STAGEGATE_NOTIFY_URL", f"https://hooks.example/x?token={PG_SECRET}")
    runtime.cache_clear()
    yield
    runtime.cache_clear()


def test_the_monitor_deployment_parameters_carry_no_credentials(credentialed_env) -> None:
    """What flows.monitor_control passes to run_deployment: Prefect stores and shows these verbatim."""
    import json

    from flows.monitor_control import monitor_parameters

    params = monitor_parameters("p-1", "canary", "run-1", 5.0)
    assert PG_SECRET not in json.dumps(params)
    assert params["events_url"] == "postgresql+psycopg://bob@db:5432/events"
    assert params["mlflow_uri"] == "http://ml@mlflow:5000"
    assert params["notify_url"] == "https://hooks.example/x?token=***"


def test_the_monitor_keeps_its_own_credentials_for_the_same_place(
    credentialed_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from flows.monitor import adopt_promotion_environment
    from flows.monitor_control import monitor_parameters

    params = monitor_parameters("p-1", "canary", None, 5.0)
    full = os.environ["STAGEGATE_EVENTS_URL"]
    adopt_promotion_environment({"STAGEGATE_EVENTS_URL": params["events_url"]})
    assert os.environ["STAGEGATE_EVENTS_URL"] == full  # same database: the worker's password is kept
    adopt_promotion_environment({"STAGEGATE_EVENTS_URL": "postgresql+psycopg://bob@other:5432/events"})
    assert os.environ["STAGEGATE_EVENTS_URL"] == "postgresql+psycopg://bob@other:5432/events"


def _strings(node: object) -> list[tuple[str, str]]:
    """(key, value) of every string in a YAML tree ('' as the key of list items)."""
    out: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            out += [(str(key), value)] if isinstance(value, str) else _strings(value)
    elif isinstance(node, list):
        for value in node:
            out += [("", value)] if isinstance(value, str) else _strings(value)
    return out


def test_deployments_and_flow_parameters_hold_no_credentials() -> None:
    """infra/prefect.yaml and flows/deployments.py: parameters and job variables are names and paths,
    never a URL with a password or a literal secret; the flows' own parameters are ids and paths."""
    import inspect
    import re

    import yaml

    from flows.deployments import deployments
    from flows.promote import promote
    from flows.reconcile import reconcile_flow
    from flows.resume import resume_promotion
    from stagegate.redaction import has_credentials

    secret_key = re.compile(r"(?i)(password|passwd|token|secret|api_?key|credential)")
    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "infra" / "prefect.yaml").read_text())
    for deployment in spec["deployments"]:
        for part in ("parameters", "work_pool"):
            for key, value in _strings(deployment.get(part) or {}):
                assert not has_credentials(value), (deployment["name"], key, value)
                assert not secret_key.search(key), (deployment["name"], key)
    for runner in deployments():
        for key, value in _strings({"p": runner.parameters, "j": runner.job_variables or {}}):
            assert not has_credentials(value) and not secret_key.search(key), (runner.name, key)
    allowed = {"model", "version", "policy", "promotion_id", "crashed_flow_run"}
    for flow in (promote, resume_promotion, reconcile_flow):
        names = set(inspect.signature(flow.fn).parameters)
        assert names <= allowed, (flow.name, names - allowed)


def test_a_registry_error_does_not_print_the_tracking_password(postgres_url: str) -> None:
    """MLflow on the machine's PostgreSQL (trust auth: the password is accepted and unused)."""
    from stagegate.registry import Registry, RegistryError

    uri = postgres_url.replace("postgres@", f"postgres:{PG_SECRET}@", 1)
    with pytest.raises(RegistryError) as err:
        Registry(uri).get_version("no-such-model", "1")
    assert PG_SECRET not in str(err.value) and "postgres@127.0.0.1" in str(err.value)

"""The connections file: adapters by entry point, every problem named, secrets only as references."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from simulator.adapters import SimulatedClock, WorkspaceOfflineData
from simulator.traffic import FileTrafficController
from stagegate.adapters.clock import WallClock
from stagegate.adapters.metrics import EventStoreMetricSource
from stagegate.cli import app
from stagegate.connections import (
    GROUPS,
    ConnectionsError,
    EnvSecret,
    SecretUnavailable,
    adapter_types,
    default_connections,
    load_connections,
    parse_connections,
    resolve_connections,
)
from stagegate.ports import PORTS
from stagegate.runtime import Runtime
from stagegate.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "infra" / "connections" / "example.yaml"


def problems_of(data: object) -> dict[str, str]:
    with pytest.raises(ConnectionsError) as info:
        parse_connections(data, "c.yaml")
    assert all(p.file == "c.yaml" for p in info.value.problems)
    return {p.field: p.reason for p in info.value.problems}


def test_every_port_has_an_entry_point_group_with_the_simulator_adapters() -> None:
    assert set(GROUPS) == set(PORTS)
    assert "file" in adapter_types("traffic")
    assert "events" in adapter_types("metrics")
    assert "workspace" in adapter_types("offline_data")
    assert {"simulated", "wall"} <= set(adapter_types("clock"))


def test_the_embedded_default_is_the_simulator() -> None:
    connections = default_connections()
    assert {port: c.cls for port, c in connections.choices.items()} == {
        "traffic": FileTrafficController,
        "metrics": EventStoreMetricSource,
        "offline_data": WorkspaceOfflineData,
        "clock": SimulatedClock,
    }
    # A file that names only some ports keeps the default for the others.
    partial = parse_connections({"clock": {"type": "wall", "max_block_seconds": 60}}, "c.yaml")
    assert (
        partial.choices["clock"].cls is WallClock and partial.choices["clock"].config.max_block_seconds == 60
    )
    assert partial.choices["traffic"].cls is FileTrafficController


def test_unknown_adapter_type_is_named_with_the_known_ones() -> None:
    found = problems_of({"traffic": {"type": "router"}})
    assert "unknown traffic adapter 'router'" in found["traffic.type"]
    assert "file" in found["traffic.type"] and "stagegate.traffic" in found["traffic.type"]


def test_bad_fields_are_named_by_the_adapters_own_schema() -> None:
    found = problems_of(
        {
            "version": 2,
            "clock": {"type": "wall", "max_block_seconds": -5, "typo": 1},
            "metrics": {"type": "events", "slate_k": "ten"},
            "offline_data": {"path": "x"},
            "unknown_port": {"type": "x"},
        }
    )
    assert "version" in found
    assert "greater than or equal to 0" in found["clock.max_block_seconds"]
    assert "Extra inputs" in found["clock.typo"]
    assert "valid integer" in found["metrics.slate_k"]
    assert "Field required" in found["offline_data.type"]
    assert "Extra inputs" in found["unknown_port"]


def test_literal_secrets_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_PASSWORD", "s3cret")
    found = problems_of(
        {
            "metrics": {"type": "events", "url": "postgresql://u:hunter2@db/x", "password": "hunter2"},
            "clock": {"type": "wall", "api_token": 12345},
        }
    )
    assert "literal secret is refused" in found["metrics.password"]
    assert "{env: NAME}" in found["metrics.password"]
    assert "password inside a URL" in found["metrics.url"]
    assert "literal secret is refused" in found["clock.api_token"]
    # A literal secret is one problem, not also pydantic's complaint about the same field.
    assert list(found).count("metrics.password") == 1
    # The same fields as references validate.
    ok = parse_connections(
        {"metrics": {"type": "events", "url": "postgresql://u@db/x", "password": {"env": "PG_PASSWORD"}}},
        "c.yaml",
    )
    assert ok.choices["metrics"].config.password == EnvSecret(env="PG_PASSWORD")


def test_secret_looking_names_only() -> None:
    from stagegate.connections.secrets import SECRET_KEY

    for key in ("password", "db_password", "api_key", "apiKey", "aws_secret_access_key", "token"):
        assert SECRET_KEY.search(key), key
    for key in ("passthrough", "tokenizer", "url", "max_block_seconds", "path"):
        assert not SECRET_KEY.search(key), key


def test_missing_environment_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STAGEGATE_TEST_UNSET", raising=False)
    found = problems_of({"metrics": {"type": "events", "password": {"env": "STAGEGATE_TEST_UNSET"}}})
    assert found == {"metrics.password": "environment variable STAGEGATE_TEST_UNSET is not set"}
    with pytest.raises(SecretUnavailable, match="STAGEGATE_TEST_UNSET"):
        EnvSecret(env="STAGEGATE_TEST_UNSET").resolve()


def test_every_problem_of_a_file_at_once(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "traffic": {"type": "router"},
                "metrics": {"type": "events", "token": "abc", "slate_k": 0},
                "clock": {"type": "wall", "max_block_seconds": -1},
            }
        )
    )
    with pytest.raises(ConnectionsError) as info:
        load_connections(bad)
    fields = [p.field for p in info.value.problems]
    assert fields == ["metrics.token", "traffic.type", "metrics.slate_k", "clock.max_block_seconds"]
    assert str(info.value).startswith(f"{bad}: metrics.token: ")


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConnectionsError, match="cannot read"):
        load_connections(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("traffic: {type: file\n")
    with pytest.raises(ConnectionsError, match="not valid YAML"):
        load_connections(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- traffic\n")
    with pytest.raises(ConnectionsError, match="expected a mapping"):
        load_connections(listed)


def test_the_example_file_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGEGATE_EVENTS_PASSWORD", "from-the-environment")
    connections = load_connections(EXAMPLE)
    assert connections.choices["clock"].cls is WallClock
    assert connections.choices["metrics"].config.password.resolve() == "from-the-environment"


def test_an_adapter_that_breaks_its_port_is_refused(tmp_path: Path) -> None:
    from dataclasses import replace

    choice = default_connections().choices["clock"]

    class NotAClock:
        Config = SimulatedClock.Config

        @classmethod
        def from_config(cls, config, host):
            return cls()

    with pytest.raises(TypeError, match="does not implement Clock"):
        replace(choice, loaded=(NotAClock, choice.config)).build(None)


def test_runtime_uses_the_file_in_force(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STAGEGATE_CONNECTIONS", raising=False)
    monkeypatch.delenv("STAGEGATE_EVENTS_URL", raising=False)
    ws = Workspace.from_env(tmp_path / "ws")
    rt = Runtime(ws)
    assert rt.connections.source == "<embedded default>"
    assert isinstance(rt.traffic, FileTrafficController) and rt.traffic.path == ws.traffic_path
    assert isinstance(rt.metrics, EventStoreMetricSource) and rt.metrics.store is rt.events

    (ws.root / "connections.yaml").write_text("clock: {type: wall, max_block_seconds: 1}\n")
    assert isinstance(Runtime(ws).clock, WallClock)

    named = tmp_path / "named.yaml"
    named.write_text(f"traffic: {{type: file, path: {tmp_path / 'elsewhere.json'}}}\n")
    monkeypatch.setenv("STAGEGATE_CONNECTIONS", str(named))
    assert Runtime(ws).traffic.path == tmp_path / "elsewhere.json"
    assert isinstance(Runtime(ws).clock, SimulatedClock)  # the named file wins over the workspace's

    named.write_text("traffic: {type: nope}\n")
    with pytest.raises(ConnectionsError, match=r"traffic\.type"):
        resolve_connections(ws.root)
    monkeypatch.setenv("STAGEGATE_HOME", str(ws.root))
    with pytest.raises(ConnectionsError, match=r"named\.yaml: traffic\.type"):
        Runtime.from_env()  # fails before anything can move, not at the first traffic call


def test_build_ports_starts_only_the_named_ports_and_checks_the_others_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A promotion builds the ports its policy's stages use (flows.context.ports_for); the others are not
    started, but a secret they reference that has gone missing still stops it before anything moves."""
    from flows.context import ports_for
    from stagegate.connections.secrets import SecretUnavailable
    from stagegate.policy import parse_policy

    monkeypatch.delenv("STAGEGATE_CONNECTIONS", raising=False)
    ws = Workspace.from_env(tmp_path / "ws")
    monkeypatch.setenv("STAGEGATE_TEST_PG_PASSWORD", "x")
    (ws.root / "connections.yaml").write_text(
        "metrics: {type: events, url: 'postgresql://u@127.0.0.1/test',"
        " password: {env: STAGEGATE_TEST_PG_PASSWORD}}\n"
    )
    rt = Runtime(ws)
    rt.build_ports({"traffic"})
    assert "traffic" in vars(rt) and not {"metrics", "offline_data", "clock"} & set(vars(rt))

    rt = Runtime(ws)
    rt.connections  # noqa: B018 -- read while the variable is set
    monkeypatch.delenv("STAGEGATE_TEST_PG_PASSWORD")  # gone by the time the promotion opens
    with pytest.raises(SecretUnavailable, match=r"metrics\.password: environment variable STAGEGATE_TEST_PG"):
        rt.build_ports({"traffic"})
    with pytest.raises(ValueError, match="unknown ports"):
        rt.build_ports({"traffic", "warp"})

    live_only = parse_policy({"model": "m", "stages": {"canary": {"steps": [{"weight": 5}]}}})
    assert ports_for(live_only) == {"traffic", "metrics", "clock"}
    offline_only = parse_policy({"model": "m", "stages": {"offline": {}}})
    assert ports_for(offline_only) == {"traffic", "offline_data", "metrics", "clock"}  # rollout always runs


def test_events_metric_source_with_a_password_reference(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The password is read from the environment at build time and put in the URL, never in the file."""
    monkeypatch.setenv("STAGEGATE_TEST_PG_PASSWORD", "not-needed-by-trust-auth")
    connections = parse_connections(
        {
            "metrics": {
                "type": "events",
                "url": postgres_url,
                "password": {"env": "STAGEGATE_TEST_PG_PASSWORD"},
            }
        },
        "c.yaml",
    )
    source = connections.build("metrics", Runtime(Workspace.from_env(tmp_path / "ws")))
    assert ":not-needed-by-trust-auth@" in source.store.url
    assert source.store.promotions() == []  # it connected


def test_cli_validate_exit_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    monkeypatch.setenv("STAGEGATE_EVENTS_PASSWORD", "x")
    good = runner.invoke(app, ["connections", "validate", str(EXAMPLE)])
    assert good.exit_code == 0, good.output
    assert "ok (traffic: file, metrics: events, offline_data: workspace, clock: wall)" in good.output

    bad = tmp_path / "bad.yaml"
    bad.write_text("traffic: {type: router}\nclock: {type: wall, password: hunter2}\n")
    result = runner.invoke(app, ["connections", "validate", str(EXAMPLE), str(bad)])
    assert result.exit_code == 2
    assert f"{bad}: traffic.type: unknown traffic adapter 'router'" in result.output
    assert f"{bad}: clock.password: a literal secret is refused" in result.output
    assert "hunter2" not in result.output  # the refused secret is not echoed back

    monkeypatch.delenv("STAGEGATE_EVENTS_PASSWORD")
    result = runner.invoke(app, ["connections", "validate", str(EXAMPLE)])
    assert result.exit_code == 2
    assert "metrics.password: environment variable STAGEGATE_EVENTS_PASSWORD is not set" in result.output


def test_promote_refuses_a_bad_connections_file_as_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 2 with the file and field named, before Prefect starts and before any state is written."""
    ws_root = tmp_path / "ws"
    monkeypatch.setenv("STAGEGATE_HOME", str(ws_root))
    monkeypatch.delenv("STAGEGATE_EVENTS_URL", raising=False)
    bad = tmp_path / "bad.yaml"
    bad.write_text("traffic: {type: nope}\n")
    monkeypatch.setenv("STAGEGATE_CONNECTIONS", str(bad))
    policy = Path(__file__).resolve().parents[2] / "policies" / "demo.yaml"
    result = CliRunner().invoke(
        app, ["promote", "--model", "recsys-ranker", "--version", "2", "--policy", str(policy)]
    )
    assert result.exit_code == 2, result.output
    assert f"{bad}: traffic.type" in result.output
    assert not (ws_root / "events.db").exists() and not (ws_root / "traffic.json").exists()

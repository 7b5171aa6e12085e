"""The world state file is unpickled only after it proved who wrote it: owner, mode and an HMAC-SHA256
under the workspace key. A crafted pickle (whose unpickling would create a marker file) is refused with
the file and the reason, the marker never appears, and `stagegate promote` / `status` exit 2 in one line."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from simulator.world_state import MAGIC, create_key, load_world, save_world, verified_payload
from stagegate.workspace import StateFileRefused, Workspace

ROOT = Path(__file__).resolve().parents[2]
STAGEGATE = Path(sys.executable).with_name("stagegate")


class _Payload:
    """Unpickling this runs Path.touch(marker): the stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    workspace = Workspace.from_env(tmp_path / "ws")
    create_key(workspace.world_key_path)
    return workspace


def _world() -> object:
    from simulator.world import LiveWorld, small_config

    return LiveWorld(small_config(seed=17, n_users=200, n_items=60, requests_per_hour=20.0))


def test_the_key_is_private_and_a_saved_world_loads_back_the_same(ws: Workspace) -> None:
    assert (ws.world_key_path.stat().st_mode & 0o777) == 0o600
    world = _world()
    save_world(world, ws.world_path, ws.world_key_path)
    assert (ws.world_path.stat().st_mode & 0o777) == 0o600
    assert ws.world_path.read_bytes().startswith(MAGIC)
    back = load_world(ws.world_path, ws.world_key_path)
    # the same world: it goes on the same way (same slates, clicks and purchases)
    from simulator.models import load_recipe, train

    ranker = train(load_recipe(ROOT / "recipes" / "bootstrap.yaml"), None, world.catalog_public())
    a, b = world.log_history(ranker, days=0.5), back.log_history(ranker, days=0.5)
    assert a.n > 0
    for field in ("items", "clicks", "purchases"):
        np.testing.assert_array_equal(getattr(b, field), getattr(a, field))


def _crafted(marker: Path) -> bytes:
    return pickle.dumps(_Payload(marker))


def _refused(ws: Workspace, match: str) -> str:
    with pytest.raises(StateFileRefused, match=match) as err:
        load_world(ws.world_path, ws.world_key_path)
    assert str(ws.world_path) in str(err.value) or str(ws.world_key_path) in str(err.value)
    return str(err.value)


def test_an_unsigned_pickle_is_refused_and_never_unpickled(ws: Workspace, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    ws.world_path.write_bytes(_crafted(marker))
    message = _refused(ws, "not a signed world state")
    assert "stagegate world init --force" in message
    assert not marker.exists()


def test_a_pickle_signed_with_another_key_is_refused(ws: Workspace, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    other = tmp_path / "other.key"
    create_key(other)
    save_world(_Payload(marker), ws.world_path, other)  # pickling does not run __reduce__'s call
    assert not marker.exists()
    _refused(ws, "HMAC-SHA256 does not match the workspace key")
    assert not marker.exists()


def test_a_changed_byte_breaks_the_signature(ws: Workspace) -> None:
    save_world({"arrays": np.arange(1000)}, ws.world_path, ws.world_key_path)
    data = bytearray(ws.world_path.read_bytes())
    data[-20] ^= 0x01
    ws.world_path.write_bytes(bytes(data))
    _refused(ws, "HMAC-SHA256 does not match")


def test_a_state_writable_by_others_is_refused(ws: Workspace) -> None:
    save_world({"a": 1}, ws.world_path, ws.world_key_path)
    ws.world_path.chmod(0o664)
    _refused(ws, "mode 0664: writable by group or others")


def test_a_key_readable_by_others_is_refused(ws: Workspace) -> None:
    save_world({"a": 1}, ws.world_path, ws.world_key_path)
    ws.world_key_path.chmod(0o644)
    message = _refused(ws, "the workspace key must be readable by its owner only")
    assert str(ws.world_key_path) in message


def test_a_state_owned_by_someone_else_is_refused(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    save_world({"a": 1}, ws.world_path, ws.world_key_path)
    if os.getuid() == 0:
        os.chown(ws.world_path, 65534, 65534)  # nobody: a real other owner
    else:  # without root a file cannot be given away; pretend to be another user instead
        monkeypatch.setattr(os, "getuid", lambda: os.stat(ws.world_path).st_uid + 1)
    _refused(ws, r"owned by uid \d+, not by the current user")


def test_a_symlink_is_refused(ws: Workspace, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.pkl"
    save_world({"a": 1}, target, ws.world_key_path)
    ws.world_path.symlink_to(target)
    _refused(ws, "symbolic link")


def test_a_workspace_made_before_signing_is_refused_with_the_fix(tmp_path: Path) -> None:
    """No key, a plain pickle: refused (not adopted), saying which command replaces it."""
    workspace = Workspace.from_env(tmp_path / "old")
    workspace.world_path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(StateFileRefused, match="no workspace key") as err:
        verified_payload(workspace.world_path, workspace.world_key_path)
    assert "stagegate world init --force" in str(err.value)


def _cli(ws_root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "STAGEGATE_HOME": str(ws_root)}
    env.pop("STAGEGATE_CONNECTIONS", None)
    return subprocess.run(
        [str(STAGEGATE), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "args",
    [
        ("promote", "--model", "recsys-ranker", "--version", "2", "--policy", "policies/demo.yaml"),
        ("status",),
    ],
    ids=["promote", "status"],
)
def test_promote_and_status_refuse_a_crafted_state_in_one_line(
    args: tuple[str, ...], ws: Workspace, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    ws.world_path.write_bytes(_crafted(marker))
    result = _cli(ws.root, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(ws.world_path) in lines[0] and "not a signed world state" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert not marker.exists()

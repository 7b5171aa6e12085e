"""The simulated world's state file: a pickle that is only unpickled after it proved who wrote it.

The live world (numpy arrays, generators, the catalogue and the users' hidden state) is pickled in the
workspace after every served window so that the next process continues the same world. Unpickling runs
whatever the stream names, so a state file someone else wrote could run code in ``promote``. Before any
unpickling, :func:`load_world` therefore checks, on the bytes it then unpickles (one open file, no
re-read):

1. the state file and the workspace key are regular files (not symbolic links) owned by the current user,
   the state file not writable by group or others, the key readable by its owner only (mode 0600);
2. the file starts with :data:`MAGIC` and an HMAC-SHA256, under the workspace key, of the magic line and
   the pickle that follows, and the HMAC matches (``hmac.compare_digest``).

The key (``world.key``, 32 random bytes as hex) is created by ``stagegate world init`` (:func:`create_key`)
and never leaves the workspace; every save signs with it. A file that fails any check raises
:class:`stagegate.workspace.StateFileRefused` naming the file and the reason. A state written before state
files were signed (no magic line, or no key) is refused too, with the command that replaces it: adopting
it would mean signing bytes nobody can vouch for, exactly the file this check exists to refuse.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import secrets
import stat
import tempfile
from pathlib import Path
from typing import Any

from stagegate.workspace import StateFileRefused

MAGIC = b"stagegate-world-state v1 hmac-sha256\n"
REINIT = "`stagegate world init --force` makes a new world (and key)"


def _refuse(path: Path, reason: str) -> StateFileRefused:
    return StateFileRefused(f"{path}: refused: {reason}; not loaded")


def create_key(key_path: Path) -> None:
    """A new random workspace key, readable and writable by its owner only (0600), replacing any old one."""
    key_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=key_path.parent, prefix=".world-key-", suffix=".tmp")  # 0600
    try:
        os.write(fd, secrets.token_hex(32).encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, key_path)


def _read_checked(path: Path, *, private: bool, missing: str) -> bytes:
    """The bytes of ``path`` after the owner and mode checks, read from the one descriptor checked."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise _refuse(path, missing) from None
    except OSError as err:
        if path.is_symlink():
            raise _refuse(path, "it is a symbolic link (a state file must be a regular file)") from None
        raise _refuse(path, f"cannot open it ({err.strerror or err})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(path, "not a regular file")
        if st.st_uid != os.getuid():
            raise _refuse(path, f"owned by uid {st.st_uid}, not by the current user (uid {os.getuid()})")
        mode = stat.S_IMODE(st.st_mode)
        if private and mode & 0o077:
            raise _refuse(
                path, f"mode {mode:04o}: the workspace key must be readable by its owner only (0600)"
            )
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise _refuse(path, f"mode {mode:04o}: writable by group or others")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _key(key_path: Path) -> bytes:
    raw = _read_checked(
        key_path,
        private=True,
        missing=f"no workspace key (the world was made before state files were signed); {REINIT}",
    ).strip()
    if len(raw) < 32:
        raise _refuse(key_path, "the workspace key is too short (expected 64 hex characters)")
    return raw


def _mac(key: bytes, payload: bytes) -> str:
    return hmac.new(key, MAGIC + payload, hashlib.sha256).hexdigest()


def verified_payload(path: Path, key_path: Path) -> bytes:
    """The pickle inside the state file ``path``, after every check above; StateFileRefused otherwise."""
    key = _key(key_path)
    data = _read_checked(path, private=False, missing="no world state")
    if not data.startswith(MAGIC):
        raise _refuse(
            path,
            "not a signed world state (written before state files were signed, or not by stagegate); "
            + REINIT,
        )
    mac, sep, payload = data[len(MAGIC) :].partition(b"\n")
    if not sep or not hmac.compare_digest(mac, _mac(key, payload).encode("ascii")):
        raise _refuse(
            path,
            f"its HMAC-SHA256 does not match the workspace key ({key_path.name}): the file was changed "
            "by something other than stagegate, or comes from another workspace",
        )
    return payload


def load_world(path: Path, key_path: Path) -> Any:
    """The world saved at ``path``, unpickled only once :func:`verified_payload` accepted the bytes."""
    return pickle.loads(verified_payload(path, key_path))


def save_world(world: Any, path: Path, key_path: Path) -> None:
    """Pickle ``world``, sign it with the workspace key, replace ``path`` atomically (mode 0600)."""
    payload = pickle.dumps(world, protocol=pickle.HIGHEST_PROTOCOL)
    key = _key(key_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".world-", suffix=".tmp")  # 0600, unique name
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(MAGIC + _mac(key, payload).encode("ascii") + b"\n" + payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

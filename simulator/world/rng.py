"""Counter-based random numbers: every draw is a pure function of (seed, stream, ids).

Common random numbers (CRN) are what makes the ground-truth oracle honest and cheap: when two copies of the
world serve different rankers, the same user arriving in the same hour, at the same slate and position, reads
the same uniform number, so the difference between the copies is the rankers' doing, not the dice
(Glasserman & Yao 1992; reference §6.8 "per-(user, session, slot) RNG streams keyed by hash(seed, ids)").

The mixer is SplitMix64's finaliser (Steele, Lea & Flood 2014), vectorised over numpy uint64 arrays, which
wrap on overflow as the algorithm expects.
"""

from __future__ import annotations

import hashlib

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TO_UNIT = 1.0 / float(1 << 53)


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijective avalanche mix of uint64 values."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):  # 0-d inputs behave as scalars, which would warn on the intended wrap
        return _mix(x)


def _mix(x: np.ndarray) -> np.ndarray:
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    return x ^ (x >> _S31)


def stream_key(seed: int, name: str) -> np.uint64:
    """A 64-bit key for a named stream; stable across runs and platforms (no Python ``hash`` salt)."""
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "little"))


def hash_ids(key: np.uint64, *ids: np.ndarray | int) -> np.ndarray:
    """Hash a key with any number of broadcastable integer id arrays into uint64 values."""
    h = np.asarray(key, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for part in ids:
            p = np.asarray(part).astype(np.int64).astype(np.uint64)
            h = _mix(h ^ (p * _GOLDEN + _GOLDEN))
    return h


def uniform(key: np.uint64, *ids: np.ndarray | int) -> np.ndarray:
    """Uniform numbers in [0, 1), one per broadcast element of ``ids``, from the top 53 bits of the hash."""
    return (hash_ids(key, *ids) >> _S11).astype(np.float64) * _TO_UNIT

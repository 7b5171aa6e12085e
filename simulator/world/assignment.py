"""Sticky arm assignment by a salted hash of the user id (reference: DESIGN "sticky by user hash").

A user's hash bucket never changes, so a ramp from 1 % to 5 % keeps every 1 % user in the candidate arm
and only adds new ones (monotone ramps; Kohavi, Tang & Xu 2020, ch. 14). The salt separates experiments.
"""

from __future__ import annotations

import numpy as np

from simulator.world.rng import stream_key, uniform


def bucket(user_id: np.ndarray, salt: str) -> np.ndarray:
    """A uniform [0, 1) number per user, fixed for a given salt."""
    return uniform(stream_key(0, f"assignment:{salt}"), np.asarray(user_id, dtype=np.int64))


def assign(user_id: np.ndarray, share: float, salt: str) -> np.ndarray:
    """int8 arm per request: 1 (candidate) when the user's bucket is below ``share``, else 0 (champion)."""
    if share <= 0.0:
        return np.zeros(len(user_id), dtype=np.int8)
    return (bucket(user_id, salt) < share).astype(np.int8)

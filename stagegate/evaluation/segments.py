"""Per-user segment masks from request context: a user's segment is their most frequent value.

Segment names are the public codes of :mod:`stagegate.logs`: user segments (cold_start, light,
heavy), devices (desktop, mobile) and dayparts (night, morning, afternoon, evening = hour // 6).
"""

from __future__ import annotations

import numpy as np

from stagegate.evaluation.logs import UserIndex
from stagegate.logs import DAYPARTS, DEVICES, SEGMENTS


def segment_names() -> tuple[str, ...]:
    return (*SEGMENTS, *DEVICES, *DAYPARTS)


def user_segments(
    users: UserIndex, user_segment: np.ndarray, device: np.ndarray, hour: np.ndarray
) -> dict[str, np.ndarray]:
    """Bool masks over ``users.user_ids`` for every segment name (ties go to the lower code)."""
    masks: dict[str, np.ndarray] = {}
    daypart = np.asarray(hour, dtype=np.int64) // 6
    for names, codes in ((SEGMENTS, user_segment), (DEVICES, device), (DAYPARTS, daypart)):
        mode = users.mode(codes, len(names))
        for code, name in enumerate(names):
            masks[name] = mode == code
    return masks

"""Run numpy's BLAS single-threaded inside the simulator and the model code.

The world and the models multiply many small or skinny matrices. Multi-threaded OpenBLAS spins up its
threads for each of them, and on a small machine that others share this made a skinny product 30× slower
than one thread (measured here: 16 ms vs 0.5 ms for a 70,000 × 7 mat-vec on 2 busy cores). threadpoolctl is
used when installed (it comes with scikit-learn, an MLflow dependency); otherwise this is a no-op.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield

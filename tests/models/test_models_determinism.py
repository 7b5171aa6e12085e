"""Training is a function of the data, not of the machine or the row order.

The logistic family used to fit in float32 and stop L-BFGS early: its coefficients then depended on the last
bits of float32 ``log1p``, which differ between AVX2 and AVX-512, and the demo's story changed with the CPU.
It now fits in float64 by Newton's method to the (unique) optimum, and its negative sample is keyed by
impression, so two fits on equal data rank identically, whatever the order of the rows or the instruction set.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from simulator.models.logistic import LogisticKnobs, fit_logistic
from simulator.world import take, take_context

ROOT = Path(__file__).resolve().parents[2]
# max_rows below the log's size, so the negative down-sampling is exercised too
KNOBS = LogisticKnobs(l2=1.0, max_rows=5000)


def _requests(tiny):
    return take_context(tiny.logs.context, np.arange(0, tiny.logs.n, 3))


def test_training_twice_gives_identical_scores_and_rankings(tiny) -> None:
    ctx = _requests(tiny)
    a = fit_logistic(tiny.logs, tiny.catalog, "purchase", KNOBS, "a")
    b = fit_logistic(tiny.logs, tiny.catalog, "purchase", KNOBS, "b")
    np.testing.assert_array_equal(a.scores(ctx), b.scores(ctx))
    np.testing.assert_array_equal(a.recommend(ctx, 10), b.recommend(ctx, 10))


def test_shuffled_but_equal_logs_give_identical_rankings(tiny) -> None:
    ctx = _requests(tiny)
    assert tiny.logs.items.size > KNOBS.max_rows  # the sample of negatives is drawn
    base = fit_logistic(tiny.logs, tiny.catalog, "purchase", KNOBS, "base")
    perm = np.random.default_rng(3).permutation(tiny.logs.n)
    shuffled = fit_logistic(take(tiny.logs, perm), tiny.catalog, "purchase", KNOBS, "shuffled")
    # sums in another order differ in their last bits; at the optimum that is all that is left
    np.testing.assert_allclose(shuffled.scores(ctx), base.scores(ctx), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(shuffled.recommend(ctx, 10), base.recommend(ctx, 10))


_CHILD = textwrap.dedent(
    """
    import pickle, sys
    import numpy as np
    from simulator.models.logistic import LogisticKnobs, fit_logistic
    logs, catalog, ctx = pickle.load(open(sys.argv[1], "rb"))
    model = fit_logistic(logs, catalog, "purchase", LogisticKnobs(l2=1.0, max_rows=5000), "child")
    np.save(sys.argv[2], model.scores(ctx))
    """
)


def test_fit_does_not_depend_on_the_instruction_set(tiny, tmp_path: Path) -> None:
    """Refit with numpy's AVX-512 kernels switched off (NPY_DISABLE_CPU_FEATURES): the same rankings."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    wide = [f for f in __cpu_dispatch__ if __cpu_features__.get(f) and ("AVX512" in f or f == "X86_V4")]
    if not wide:
        pytest.skip("this CPU has no AVX-512 kernels to switch off")
    ctx = _requests(tiny)
    data = tmp_path / "data.pkl"
    data.write_bytes(pickle.dumps((tiny.logs, tiny.catalog, ctx)))
    out = tmp_path / "scores.npy"
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(wide), "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", _CHILD, str(data), str(out)], env=env, check=True, timeout=120)
    here = fit_logistic(tiny.logs, tiny.catalog, "purchase", KNOBS, "here")
    there = np.load(out)
    np.testing.assert_allclose(there, here.scores(ctx), rtol=0, atol=1e-9)
    from stagegate.ranking import top_k

    np.testing.assert_array_equal(top_k(there, 10), top_k(here.scores(ctx), 10))

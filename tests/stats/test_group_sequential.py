"""Group-sequential boundaries against published tables, and their error rates by simulation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from gates.stats.group_sequential import (
    constant_bounds,
    crossing_probabilities,
    efficacy_bounds,
    futility_design,
    spending_function,
)


def equally_spaced(k: int) -> np.ndarray:
    return np.arange(1, k + 1) / k


# Jennison & Turnbull (2000), Group Sequential Methods with Applications to Clinical Trials, Table 2.1
# (Pocock's C_P(K, alpha)) and Table 2.3 (O'Brien & Fleming's C_B(K, alpha)), two-sided alpha = 0.05,
# equally spaced looks. Also Pocock (1977) Biometrika 64:191 and O'Brien & Fleming (1979) Biometrics 35:549.
@pytest.mark.parametrize(
    ("k", "pocock", "obrien_fleming"),
    [
        (1, 1.960, 1.960),
        (2, 2.178, 1.977),
        (3, 2.289, 2.004),
        (4, 2.361, 2.024),
        (5, 2.413, 2.040),
        (10, 2.555, 2.087),
    ],
)
def test_classical_constants_match_jennison_turnbull_tables_2_1_and_2_3(
    k: int, pocock: float, obrien_fleming: float
) -> None:
    t = equally_spaced(k)
    assert constant_bounds(t, 0.05, "pocock", sides=2).efficacy[0] == pytest.approx(pocock, abs=5e-4)
    assert constant_bounds(t, 0.05, "obrien_fleming", sides=2).efficacy[-1] == pytest.approx(
        obrien_fleming, abs=5e-4
    )


def test_lan_demets_obrien_fleming_k5_two_sided_matches_ldbounds() -> None:
    # Lan-DeMets O'Brien-Fleming-type spending, K = 5 equally spaced looks, two-sided alpha = 0.05 (alpha/2
    # per side): the standard table of R's ldbounds (Reboussin, DeMets, Kim & Lan 2000, Controlled Clinical
    # Trials 21:190-207) and gsDesign (test.type = 2, sfu = sfLDOF).
    d = efficacy_bounds(equally_spaced(5), 0.05, "obrien_fleming", sides=2)
    np.testing.assert_allclose(d.efficacy, [4.877, 3.357, 2.680, 2.290, 2.031], atol=5e-4)


# The rpact package's own unit tests (rpact-com/rpact, tests/testthat/test-f_design_group_sequential.R,
# expected values with tolerance 1e-7): one-sided designs, unequally spaced looks.
RPACT_EFFICACY = [
    # (information rates, alpha, spending, param, expected critical values, rpact call)
    ([0.2, 0.4, 1.0], 0.03, "hsd", 0.0, [2.5121443, 2.4228747, 2.0280392], "x1: asHSD gammaA=0"),
    ([0.4, 0.7], 0.025, "pocock", None, [2.223875, 2.3050796], "x6b: asP, information < 1 at the last stage"),
]


@pytest.mark.parametrize(("t", "alpha", "spending", "param", "expected", "label"), RPACT_EFFICACY)
def test_alpha_spending_matches_rpact(
    t: list, alpha: float, spending: str, param: float | None, expected: list, label: str
) -> None:
    d = efficacy_bounds(t, alpha, spending, param=param)  # type: ignore[arg-type]
    np.testing.assert_allclose(d.efficacy, expected, atol=1e-5, err_msg=label)


def test_classical_obrien_fleming_matches_rpact_default_design() -> None:
    # rpact x0: getDesignInverseNormal() = O'Brien-Fleming, K = 3, one-sided alpha = 0.025.
    d = constant_bounds(equally_spaced(3), 0.025, "obrien_fleming", sides=1)
    np.testing.assert_allclose(d.efficacy, [3.4710914, 2.4544323, 2.0040356], atol=1e-5)


RPACT_FUTILITY = [
    # (t, alpha, beta, spending, param, futility spending, param, critical, futility, rpact call)
    (
        [0.4, 0.75, 1.0], 0.13, 0.41, "obrien_fleming", None, "power", 2.5,
        [2.1280732, 1.4368565, 1.2468994], [-0.83725762, 0.35992547], "x7a: asOF + bsKD 2.5",
    ),
    (
        [0.4, 0.75, 0.85, 1.0], 0.13, 0.41, "obrien_fleming", None, "power", 2.5,
        [2.1280732, 1.4368565, 1.422873, 1.2970881], [-0.82676531, 0.3743303, 0.65077266], "x7a, kMax = 4",
    ),
    (
        [0.3, 0.7, 1.0], 0.03, 0.34, "power", 2.2, "power", 3.2,
        [2.8594012, 2.2435708, 1.9735737], [-1.1558435, 0.72836893], "x3: asKD 2.2 + bsKD 3.2",
    ),
    (
        [0.2, 0.4, 1.0], 0.07, 0.14, "hsd", -1.0, "hsd", -2.0,
        [2.364813, 2.1928805, 1.5660474], [-1.1063623, -0.35992439], "x2: asHSD -1 + bsHSD -2",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("t", "alpha", "beta", "sp", "par", "fsp", "fpar", "critical", "futility", "label"), RPACT_FUTILITY
)
def test_non_binding_beta_spending_futility_matches_rpact(
    t: list, alpha: float, beta: float, sp: str, par: float | None, fsp: str, fpar: float,
    critical: list, futility: list, label: str,
) -> None:  # fmt: skip
    d = futility_design(t, alpha, beta, sp, fsp, param=par, futility_param=fpar)  # type: ignore[arg-type]
    np.testing.assert_allclose(d.efficacy, critical, atol=1e-5, err_msg=label)
    np.testing.assert_allclose(d.futility[:-1], futility, atol=1e-5, err_msg=label)
    assert d.futility[-1] == d.efficacy[-1]


def test_rpact_x3_maximum_information() -> None:
    # rpact x3 reports shift = drift^2 = 5.551371 and inflation factor 1.0555891.
    d = futility_design([0.3, 0.7, 1.0], 0.03, 0.34, "power", "power", param=2.2, futility_param=3.2)
    assert d.drift**2 == pytest.approx(5.551371, abs=1e-5)
    assert d.inflation == pytest.approx(1.0555891, abs=1e-6)


@pytest.mark.parametrize("spending", ["obrien_fleming", "pocock", "power", "hsd"])
def test_spent_alpha_and_power_are_exact(spending: str) -> None:
    t = np.array([0.1, 0.25, 0.3, 0.55, 0.8, 1.0])  # unequally spaced on purpose
    d = futility_design(t, 0.05, 0.2, spending, spending)  # type: ignore[arg-type]
    up0, _ = crossing_probabilities(t, d.efficacy, None, 0.0)
    np.testing.assert_allclose(np.cumsum(up0), spending_function(spending, 0.05, t), atol=1e-7)  # type: ignore[arg-type]
    up1, low1 = crossing_probabilities(t, d.efficacy, d.futility, d.drift)
    assert up1.sum() == pytest.approx(0.8, abs=1e-6) and low1.sum() == pytest.approx(0.2, abs=1e-6)
    # Non-binding: honouring the futility bounds can only lower the type I error.
    assert crossing_probabilities(t, d.efficacy, d.futility, 0.0)[0].sum() <= 0.05 + 1e-9


def test_type_i_error_by_simulation_with_many_looks() -> None:
    """Brownian paths observed at 40 unequal looks: rejections within the binomial bound of alpha."""
    rng = np.random.default_rng(7)
    t = np.sort(rng.uniform(0.02, 1.0, 39))
    t = np.append(t, 1.0)
    d = efficacy_bounds(t, 0.05, "pocock")
    runs = 20_000
    increments = rng.standard_normal((runs, t.size)) * np.sqrt(np.diff(t, prepend=0.0))
    z = increments.cumsum(axis=1) / np.sqrt(t)
    rejections = int((z >= d.efficacy).any(axis=1).sum())
    assert binomtest(rejections, runs, 0.05).pvalue > 0.001, rejections / runs


def test_invalid_information_is_refused() -> None:
    with pytest.raises(ValueError, match="increasing"):
        efficacy_bounds([0.5, 0.5, 1.0], 0.05)
    with pytest.raises(ValueError, match="alpha"):
        efficacy_bounds([0.5, 1.0], 1.5)
    with pytest.raises(ValueError, match="spending"):
        efficacy_bounds([0.5, 1.0], 0.05, "linear")  # type: ignore[arg-type]

"""The user population: hidden tastes and sensitivities, public device and join time.

Reference §6.2: taste clusters around mixtures of category centres; price sensitivity ρ ~ LogNormal(0, 0.4);
freshness appetite κ ~ Gamma(2, 0.5); bait susceptibility β ~ U(0.5, 1.5); a heavy-tailed activity rate;
60 % mobile. Users join over time, so cold-start users keep arriving (Booking's "continuous cold start").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.world.catalog import Catalog, _normalise
from simulator.world.config import WorldConfig


@dataclass
class Users:
    """Static user attributes; the mutable state (taste drift, fatigue, history) lives in the world."""

    taste: np.ndarray  # (n_users, dim) unit norm, hidden
    cluster: np.ndarray  # int (n_users,), hidden
    price_sens: np.ndarray  # ρ_u, hidden
    fresh_appetite: np.ndarray  # κ_u, hidden
    bait_sens: np.ndarray  # β_u, hidden
    activity: np.ndarray  # relative visit rate, hidden (its effect is public through history length)
    mobile_primary: np.ndarray  # bool: the device the user mostly uses
    join_day: np.ndarray  # float64: the user is active from this day on

    @property
    def n_users(self) -> int:
        return len(self.activity)


def make_users(config: WorldConfig, catalog: Catalog, rng: np.random.Generator) -> Users:
    """Draw the user pool (reference §6.2). Deterministic given the generator's state."""
    n, d = config.n_users, config.dim
    k = config.n_taste_clusters
    c = catalog.category_centres.shape[0]
    # each taste cluster likes two categories; users scatter around their cluster
    pairs = np.stack([rng.choice(c, size=2, replace=False) for _ in range(k)])
    centres = _normalise(
        catalog.category_centres[pairs].sum(axis=1) + 0.3 * rng.normal(size=(k, d)) / np.sqrt(d)
    )
    cluster = rng.choice(k, size=n, p=rng.dirichlet(np.full(k, 4.0)))
    taste = _normalise(centres[cluster] + 0.7 * rng.normal(size=(n, d)) / np.sqrt(d))
    n_existing = round(config.existing_user_share * n)
    join_day = np.concatenate(
        [np.zeros(n_existing), rng.uniform(0.0, config.user_join_days, size=n - n_existing)]
    )
    return Users(
        taste=taste,
        cluster=cluster,
        price_sens=rng.lognormal(0.0, 0.4, size=n),
        fresh_appetite=rng.gamma(2.0, 0.5, size=n),
        bait_sens=rng.uniform(0.5, 1.5, size=n),
        activity=rng.lognormal(0.0, 0.9, size=n),
        mobile_primary=rng.random(n) < 0.6,
        join_day=join_day[rng.permutation(n)],
    )

"""The catalogue: public item attributes, hidden item truth, and the public view models may read.

Reference §6.2: categories with centres in a latent space; price log-normal per category; a publish day
(most items before day 0, the rest arrive later); a saliency feature that is a noisy public proxy of the
hidden bait level; a noisy public content embedding. Hidden: the true embedding φ, quality q and bait b
(bait items, ~15 %, are clicky but of low quality: RecSim's "choc vs kale", Ie et al. 2019).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from simulator.world.config import WorldConfig

if TYPE_CHECKING:
    import pandas as pd

EMBEDDING_PREFIX = "emb_"


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class Catalog:
    """Static item attributes. Public: category, price, margin, publish_day, saliency, public_embedding."""

    category: np.ndarray  # int32 (n_items,)
    price: np.ndarray  # float64
    margin: np.ndarray  # float64, share of price
    publish_day: np.ndarray  # float64, days since the world began (negative: published before)
    saliency: np.ndarray  # float64, public: bait + noise (a thumbnail/title "clickiness" proxy)
    public_embedding: np.ndarray  # float64 (n_items, dim): true embedding + noise
    # hidden truth
    embedding: np.ndarray  # float64 (n_items, dim), unit norm
    quality: np.ndarray  # float64
    bait: np.ndarray  # float64 in (0, 1)
    is_bait: np.ndarray  # bool
    category_centres: np.ndarray  # (n_categories, dim)
    fresh_tau: np.ndarray  # (n_categories,) freshness time constant in days
    hour_amplitude: np.ndarray  # (n_categories,) g_c(h) = A_c sin(2π (h − h_c) / 24)
    hour_phase: np.ndarray  # (n_categories,)
    log_price_rel: np.ndarray  # log(price / median price), used by the conversion model

    @property
    def n_items(self) -> int:
        return len(self.category)

    def hour_affinity(self, hour: np.ndarray) -> np.ndarray:
        """g_c(h) for every (request, category): (n, n_categories)."""
        h = np.asarray(hour, dtype=float)[:, None]
        return self.hour_amplitude[None, :] * np.sin(2 * np.pi * (h - self.hour_phase[None, :]) / 24.0)


def make_catalog(config: WorldConfig, rng: np.random.Generator) -> Catalog:
    """Draw a catalogue (reference §6.2). Deterministic given the generator's state."""
    n, d, c = config.n_items, config.dim, config.n_categories
    centres = _normalise(rng.normal(size=(c, d)))
    # uneven category sizes, as in real catalogues
    cat_weights = rng.dirichlet(np.full(c, 3.0))
    category = rng.choice(c, size=n, p=cat_weights).astype(np.int32)
    embedding = _normalise(centres[category] + 0.6 * rng.normal(size=(n, d)) / np.sqrt(d))
    public_embedding = embedding + 0.12 * rng.normal(size=(n, d))

    log_price_centre = rng.uniform(np.log(12.0), np.log(90.0), size=c)
    price = np.round(np.exp(log_price_centre[category] + 0.5 * rng.normal(size=n)), 2)
    price = np.maximum(price, 1.0)
    margin = rng.uniform(0.1, 0.4, size=n)

    n_initial = round(config.initial_item_share * n)
    publish_day = np.concatenate(
        [
            rng.uniform(-60.0, 0.0, size=n_initial),
            rng.uniform(0.0, config.item_arrival_days, size=n - n_initial),
        ]
    )
    publish_day = publish_day[rng.permutation(n)]

    is_bait = rng.random(n) < config.bait_share
    bait = np.where(is_bait, rng.beta(5.0, 2.0, size=n), rng.beta(1.0, 5.0, size=n))
    quality = rng.normal(size=n) - 1.5 * is_bait
    saliency = bait + 0.3 * rng.normal(size=n)

    # a third of the categories are "fast" (fashion-like, τ = 7 days), the rest slow (τ = 60 days)
    fresh_tau = np.where(rng.random(c) < 1 / 3, 7.0, 60.0)
    hour_amplitude = rng.uniform(0.3, 1.0, size=c) * rng.choice([-1.0, 1.0], size=c)
    hour_phase = rng.uniform(0.0, 24.0, size=c)
    return Catalog(
        category=category,
        price=price,
        margin=margin,
        publish_day=publish_day,
        saliency=saliency,
        public_embedding=public_embedding,
        embedding=embedding,
        quality=quality,
        bait=bait,
        is_bait=is_bait,
        category_centres=centres,
        fresh_tau=fresh_tau,
        hour_amplitude=hour_amplitude,
        hour_phase=hour_phase,
        log_price_rel=np.log(price / np.median(price)),
    )


def public_frame(catalog: Catalog, stock: np.ndarray) -> pd.DataFrame:
    """The public catalogue: what models and the simulation stage's twin may read (never the hidden truth)."""
    import pandas as pd  # lazy: `stagegate --help` must not pay for pandas

    frame = pd.DataFrame(
        {
            "item_id": np.arange(catalog.n_items, dtype=np.int64),
            "category": catalog.category.astype(np.int64),
            "price": catalog.price,
            "margin": catalog.margin,
            "publish_day": catalog.publish_day,
            "saliency": catalog.saliency,
            "stock": stock.astype(np.int64),
        }
    )
    emb = pd.DataFrame(
        catalog.public_embedding,
        columns=[f"{EMBEDDING_PREFIX}{j}" for j in range(catalog.public_embedding.shape[1])],
    )
    return pd.concat([frame, emb], axis=1)


def public_embeddings(catalog_frame: pd.DataFrame) -> np.ndarray:
    """The (n_items, dim) public embedding matrix from a public catalogue frame, in item_id order."""
    cols = [c for c in catalog_frame.columns if c.startswith(EMBEDDING_PREFIX)]
    cols.sort(key=lambda name: int(name[len(EMBEDDING_PREFIX) :]))
    frame = catalog_frame.sort_values("item_id")
    return frame[cols].to_numpy(dtype=float)

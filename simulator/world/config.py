"""World configuration: sizes, traffic, mechanism switches and the response-model coefficients.

Every offline–online discrepancy the world can produce comes from a named mechanism that can be switched
off (reference §6.1, §6.6); the ablation tests rely on these switches. Coefficients follow the response model
of reference §6.3 (α for attractiveness, γ for conversion); their defaults are calibrated so that the
default world hits the targets of §6.3 item 5 (CTR 2–5 %, conversion 6–12 %, ~2.5 slates per session).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Mechanisms(BaseModel):
    """Switches for each mechanism of the live world (all on by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bait: bool = True  # clickbait items: attractive (saliency) but low quality (RecSim choc/kale)
    stock: bool = True  # finite stock that depletes with purchases and restocks weekly
    freshness: bool = True  # users value new items (per-category half-life)
    redundancy: bool = True  # near-duplicate items in one slate lose attractiveness (KuaiSim, SARDINE)
    fatigue: bool = True  # repeated exposure to one category tires the user
    satisfaction: bool = True  # disappointment shortens sessions and lowers the visit rate (Accordion)
    social_proof: bool = True  # recent sales raise attractiveness (a popularity feedback loop)
    context: bool = True  # hour × category affinity, device-specific position curves
    interest_drift: bool = True  # tastes move toward purchased items (homogenisation)


class ResponseParams(BaseModel):
    """Coefficients of the click (attractiveness) and purchase (conversion) models, reference §6.3."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # attractiveness a_ui = α0 + α1<θ,φ> + α2 β b + α3 κ fresh + α4 g_c(h) − α5 F − α6 red + α7 log1p(sales7d)
    alpha0: float = -3.0
    alpha_affinity: float = 3.0
    alpha_bait: float = 1.4
    alpha_fresh: float = 0.6
    alpha_context: float = 0.5
    alpha_fatigue: float = 0.8
    alpha_redundancy: float = 1.2
    alpha_social: float = 0.15
    # conversion after a click: σ(γ0 + γ1<θ,φ> + γ2 q − γ3 ρ log(p/p_med) + γ4 κ fresh), zero if out of stock
    gamma0: float = -2.75
    gamma_affinity: float = 1.5
    gamma_quality: float = 0.9
    gamma_price: float = 1.0
    gamma_fresh: float = 0.3
    # examination (PBM): e_k = (1/k)^η for k <= visible slots
    eta_desktop: float = 0.7
    eta_mobile: float = 1.2
    visible_desktop: int = 10
    visible_mobile: int = 6
    # satisfaction S_u (per slate): S <- λ S + δ1 purchases − δ2 Σ (bait − floor)+ of unbought clicks
    #                              − δ3 OOS clicks − δ4 mean redundancy
    sat_decay_slate: float = 0.97
    sat_decay_day: float = 0.85
    sat_purchase: float = 0.5
    sat_bait_click: float = 0.6
    sat_bait_floor: float = 0.25  # only the bait level above this disappoints (ordinary items are not bait)
    sat_oos_click: float = 0.4
    sat_redundancy: float = 0.1
    # session continuation σ(c0 + c1 [any click] + c2 S) and visit rate × exp(η_S S)
    cont0: float = 0.45
    cont_click: float = 0.5
    cont_sat: float = 0.3
    visit_sat: float = 0.4
    # fatigue F_uc <- φ F_uc + share of slate in c (per slate); × decay per day
    fatigue_slate: float = 0.8
    fatigue_day: float = 0.3
    drift_rate: float = 0.02  # θ <- normalise((1 − ω) θ + ω φ_i) after a purchase


class WorldConfig(BaseModel):
    """Everything that defines a live world; the same config and seed give byte-identical logs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 7
    n_users: int = Field(3000, ge=10, description="user pool, including users who join later")
    n_items: int = Field(600, ge=20, description="catalogue, including items published later")
    n_categories: int = Field(12, ge=2)
    dim: int = Field(16, ge=2, description="latent taste/content dimension")
    n_taste_clusters: int = Field(8, ge=1)
    slate_k: int = Field(10, ge=1)
    requests_per_hour: float = Field(
        110.0,
        gt=0,
        description=(
            "nominal slates per hour, averaged over the day, once every user has joined and at neutral "
            "satisfaction; the realised rate is lower while users still join and moves with satisfaction"
        ),
    )
    history_len: int = Field(10, ge=1, description="recent clicked/purchased items a ranker sees")
    existing_user_share: float = Field(0.5, ge=0, le=1, description="users already active at day 0")
    user_join_days: float = Field(42.0, gt=0, description="the other users join uniformly over these days")
    initial_item_share: float = Field(0.8, ge=0, le=1, description="items published before day 0")
    item_arrival_days: float = Field(42.0, gt=0, description="the other items are published over these days")
    bait_share: float = Field(0.15, ge=0, le=1)
    restock_prob: float = Field(0.9, ge=0, le=1, description="weekly chance that an item is restocked")
    cover_days: tuple[float, float] = (7.0, 21.0)  # each item's stock covers this many days of demand
    segment_thresholds: tuple[int, int] = (5, 20)  # interactions: < a cold_start, < b light, else heavy
    max_slates_per_session: int = Field(8, ge=1)
    block_hours: int = Field(
        8, ge=1, le=24, description="hours simulated together (stock and state still move slate by slate)"
    )
    explore_pool: int = Field(20, ge=1, description="Plackett–Luce samples from the champion's top M")
    pscore_samples: int = Field(
        32, ge=1, description="Monte-Carlo samples (Rao–Blackwellised) for item-position propensities"
    )
    compute_pscore: bool = True
    base_latency_ms: float = Field(25.0, gt=0, description="median latency of rankers that do not say")
    latency_sigma: float = Field(0.35, ge=0)
    base_error_rate: float = Field(1e-4, ge=0, le=1)
    assignment_salt: str = "stagegate-arm"
    mechanisms: Mechanisms = Mechanisms()
    response: ResponseParams = ResponseParams()


def small_config(seed: int = 7, **overrides: object) -> WorldConfig:
    """A config for tests: fewer users and items, same mechanisms, runs a simulated week in well under 1 s."""
    base: dict[str, object] = {"seed": seed, "n_users": 1200, "n_items": 300, "requests_per_hour": 45.0}
    base.update(overrides)
    return WorldConfig(**base)

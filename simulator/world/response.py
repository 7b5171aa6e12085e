"""The user response model: examination × attractiveness → clicks; fit × quality × price × stock → purchases.

Reference §6.3. Clicks follow a position-based model (PBM; Craswell et al. 2008, OBP's slate 'pbm'):
P(click at k) = e_k(device) · σ(a_ui). Purchases happen only after a click, with a conversion probability that
does NOT contain the bait term, so bait raises clicks and not purchases (the click/revenue decoupling that
produces the offline–online gap). Out-of-stock items can be clicked but not bought.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.world.catalog import Catalog
from simulator.world.config import Mechanisms, ResponseParams
from simulator.world.users import Users


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


def examination(device: np.ndarray, k: int, params: ResponseParams, mech: Mechanisms) -> np.ndarray:
    """(n, k) examination probabilities e_k = (1/k)^η(device) for k <= visible slots (mobile sees fewer)."""
    pos = np.arange(1, k + 1, dtype=float)
    if not mech.context:
        return np.broadcast_to(pos ** (-1.0), (len(device), k)).copy()
    desk = pos ** (-params.eta_desktop) * (pos <= params.visible_desktop)
    mob = pos ** (-params.eta_mobile) * (pos <= params.visible_mobile)
    return np.where(np.asarray(device)[:, None] == 1, mob[None, :], desk[None, :])


def redundancy(items: np.ndarray, embedding: np.ndarray) -> np.ndarray:
    """red_i = max cosine of a slot's item to the items ranked above it (KuaiSim/SARDINE style); 0 at top."""
    emb = embedding[items]  # (n, k, d), unit norm
    sim = np.einsum("nkd,njd->nkj", emb, emb)
    k = items.shape[1]
    above = np.tril(np.ones((k, k), dtype=bool), -1)  # j < k
    sim = np.where(above[None], sim, -np.inf)
    red = sim.max(axis=2)
    red[:, 0] = 0.0
    return np.maximum(red, 0.0)


@dataclass(frozen=True)
class Response:
    """The outcome of showing slates: per (request, slot) arrays plus per-request summaries."""

    clicks: np.ndarray  # bool (n, k)
    purchases: np.ndarray  # bool (n, k)
    oos_clicks: np.ndarray  # bool (n, k): clicked, wanted to buy, found it sold out
    revenue: np.ndarray  # float (n,)
    redundancy: np.ndarray  # float (n, k)
    p_click: np.ndarray  # float (n, k) the click probability (hidden truth, for the oracle only)
    p_buy: np.ndarray  # float (n, k) P(purchase | click), zero when out of stock (hidden truth)


def freshness(age_days: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """exp(−age/τ_c); zero for unpublished items (age inf or negative)."""
    age = np.where(np.isfinite(age_days) & (age_days >= 0), age_days, np.inf)
    return np.exp(-age / tau)


def respond(
    users_idx: np.ndarray,
    items: np.ndarray,
    device: np.ndarray,
    hour: np.ndarray,
    item_age: np.ndarray,
    *,
    catalog: Catalog,
    users: Users,
    taste: np.ndarray,
    fatigue: np.ndarray,
    sales7d: np.ndarray,
    stock: np.ndarray,
    u_click: np.ndarray,
    u_buy: np.ndarray,
    params: ResponseParams,
    mech: Mechanisms,
) -> Response:
    """Simulate clicks and purchases for slates ``items`` (n, k); ``item_age``: (n, k) days since publication.

    Purchases are *intentions* here: the stock allocation (who gets the last unit) is done by the caller,
    which knows the order of requests.
    """
    n, k = items.shape
    cat = catalog.category[items]
    aff = np.einsum("nd,nkd->nk", taste[users_idx], catalog.embedding[items])
    fresh = freshness(item_age, catalog.fresh_tau[cat]) if mech.freshness else np.zeros((n, k))
    kappa = users.fresh_appetite[users_idx][:, None]

    a = params.alpha0 + params.alpha_affinity * aff
    if mech.bait:
        a = a + params.alpha_bait * users.bait_sens[users_idx][:, None] * catalog.bait[items]
    a = a + params.alpha_fresh * kappa * fresh
    if mech.context:
        g = catalog.hour_affinity(hour)  # (n, C)
        a = a + params.alpha_context * np.take_along_axis(g, cat, axis=1)
    if mech.fatigue:
        a = a - params.alpha_fatigue * fatigue[users_idx[:, None], cat]
    red = redundancy(items, catalog.embedding) if mech.redundancy else np.zeros((n, k))
    a = a - params.alpha_redundancy * red
    if mech.social_proof:
        a = a + params.alpha_social * np.log1p(sales7d[items])

    p_click = examination(device, k, params, mech) * sigmoid(a)
    clicks = u_click < p_click

    c = (
        params.gamma0
        + params.gamma_affinity * aff
        + params.gamma_quality * catalog.quality[items]
        - params.gamma_price * users.price_sens[users_idx][:, None] * catalog.log_price_rel[items]
        + params.gamma_fresh * kappa * fresh
    )
    p_conv = sigmoid(c)
    wants = clicks & (u_buy < p_conv)
    available = stock[items] > 0
    purchases = wants & available
    oos = clicks & ~available
    revenue = (purchases * catalog.price[items]).sum(axis=1)
    return Response(
        clicks=clicks,
        purchases=purchases,
        oos_clicks=oos,
        revenue=revenue,
        redundancy=red,
        p_click=p_click,
        p_buy=p_conv * available,
    )

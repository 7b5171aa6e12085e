"""A deliberately simple NDCG@k on logged labels, for calibration tests of the demo zoo.

The pipeline's offline stage (stagegate/evaluation) has the full metric set; this helper exists so that
the model package can check "offline winner, online loser" without depending on it. Protocol (the common
practice of reference §6.4, flaws included): per user of the test window, the slate the model recommends
at the user's first test request is scored against every item the user clicked (or bought) in the test
window; users with no positive are skipped. NDCG = DCG/IDCG with binary gains (Järvelin & Kekäläinen 2002).
"""

from __future__ import annotations

import numpy as np

from stagegate.models.base import Ranker
from stagegate.models.interactions import Label, label_matrix
from stagegate.world.batch import take_context
from stagegate.world.schema import ServedBatch


def ndcg_per_request(ranker: Ranker, test: ServedBatch, k: int = 10, label: Label = "click") -> float:
    """Mean NDCG@k over test requests with a positive, each re-ranked from its own context, relevant items
    being the positives of that request's logged slate (the protocol of stagegate.evaluation, averaged over
    requests rather than users)."""
    pos = label_matrix(test, label)
    rows = np.flatnonzero(pos.any(axis=1))
    if rows.size == 0:
        return float("nan")
    slates = np.asarray(ranker.recommend(take_context(test.context, rows), k))
    logged = np.where(pos[rows], test.items[rows], -1)
    relevant = (slates[:, :, None] == logged[:, None, :]).any(axis=2)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    idcg = np.cumsum(discount)[np.minimum(pos[rows].sum(axis=1), k) - 1]
    return float(((relevant * discount).sum(axis=1) / idcg).mean())


def ndcg_at_k(
    ranker: Ranker, test: ServedBatch, k: int = 10, label: Label = "click"
) -> tuple[float, np.ndarray]:
    """Mean NDCG@k over test users with at least one positive, and the per-user values (user-id order)."""
    pos = label_matrix(test, label)
    rows, cols = np.nonzero(pos)
    if rows.size == 0:
        return float("nan"), np.zeros(0)
    users = test.context.user_id
    pos_user, pos_item = users[rows], test.items[rows, cols]
    eval_users = np.unique(pos_user)
    # the first test request of each evaluated user
    order = np.lexsort((test.context.request_id, test.context.t))
    seen_users, first = np.unique(users[order], return_index=True)
    idx = order[first[np.searchsorted(seen_users, eval_users)]]
    slates = np.asarray(ranker.recommend(take_context(test.context, idx), k))
    # relevance: is slate item j among the user's positives?
    relevant = np.zeros(slates.shape, dtype=bool)
    user_pos = np.searchsorted(eval_users, pos_user)
    pos_set = np.zeros((len(eval_users), int(test.items.max()) + 1 if test.n else 1), dtype=bool)
    pos_set[user_pos, pos_item] = True
    inside = slates < pos_set.shape[1]
    relevant[inside] = pos_set[np.nonzero(inside)[0], slates[inside]]
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (relevant * discount).sum(axis=1)
    n_pos = pos_set.sum(axis=1)
    idcg = np.cumsum(discount)[np.minimum(n_pos, k) - 1]
    values = dcg / idcg
    return float(values.mean()), values

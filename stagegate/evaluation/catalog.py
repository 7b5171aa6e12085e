"""The public catalogue, as arrays indexed by item id, for the beyond-accuracy metrics.

Reads a pandas DataFrame with one row per item: an ``item_id`` column (or, without one, the row position
is the item id), a category column, embedding columns ``<prefix>0 .. <prefix>{d-1}`` and optionally a
price column. Only public attributes are read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class CatalogView:
    """Item attributes as arrays of length ``n_items`` (row = item id)."""

    embeddings: np.ndarray  # (n_items, d) L2-normalised (zero rows stay zero)
    category: np.ndarray  # (n_items,) int codes 0..n_categories-1 (a last "<unknown>" code if needed)
    category_names: tuple[str, ...]
    price: np.ndarray | None  # (n_items,) or None

    @property
    def n_items(self) -> int:
        return len(self.category)

    @property
    def n_categories(self) -> int:
        return len(self.category_names)

    @classmethod
    def from_frame(
        cls,
        catalog: pd.DataFrame,
        n_items: int | None = None,
        *,
        emb_prefix: str = "emb_",
        category_col: str = "category",
        price_col: str = "price",
        id_col: str = "item_id",
    ) -> CatalogView:
        """Build the view; ValueError names a missing column or a catalogue smaller than ``n_items``."""
        pattern = re.compile(rf"^{re.escape(emb_prefix)}(\d+)$")
        emb_cols = sorted(
            (int(m.group(1)), c) for c in catalog.columns if (m := pattern.match(str(c))) is not None
        )
        if not emb_cols:
            raise ValueError(f"catalogue has no embedding columns named {emb_prefix}0, {emb_prefix}1, ...")
        if category_col not in catalog.columns:
            raise ValueError(f"catalogue has no category column {category_col!r}")
        if id_col in catalog.columns:
            ids = np.asarray(catalog[id_col], dtype=np.int64)
            if ids.size and ids.min() < 0:
                raise ValueError(f"catalogue column {id_col!r} has negative item ids")
        else:
            ids = np.arange(len(catalog), dtype=np.int64)
        size = int(ids.max()) + 1 if ids.size else 0
        if n_items is not None:
            if size > n_items:
                raise ValueError(f"catalogue has item id {size - 1} but the log knows only {n_items} items")
            size = n_items

        emb = np.zeros((size, len(emb_cols)), dtype=float)
        emb[ids] = catalog[[c for _, c in emb_cols]].to_numpy(dtype=float)
        norm = np.linalg.norm(emb, axis=1, keepdims=True)
        emb = np.divide(emb, norm, out=np.zeros_like(emb), where=norm > 0)

        raw = catalog[category_col].to_numpy()
        names, codes = np.unique(raw.astype(str), return_inverse=True)
        names = tuple(str(n) for n in names)
        category = np.full(size, len(names), dtype=np.int64)  # items absent from the catalogue: "<unknown>"
        category[ids] = codes
        if (category == len(names)).any():
            names = (*names, "<unknown>")

        price = None
        if price_col in catalog.columns:
            price = np.full(size, np.nan)
            price[ids] = catalog[price_col].to_numpy(dtype=float)
        return cls(emb, category, names, price)

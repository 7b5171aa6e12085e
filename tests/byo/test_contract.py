"""The ranking contract (stagegate.contract) and the adapter that serves any pyfunc meeting it
(stagegate.models.external): every problem named by field, every bad answer refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

from simulator.models.pyfunc import _signature as recipe_signature
from stagegate.contract import ContractError, check_signature, contract_signature
from stagegate.logs import RequestContext
from stagegate.models.external import ExternalRanker, RankingOutputError, candidate_sets, contract_frame


def _sig(inputs: list, outputs: list, params: list | None = None) -> ModelSignature:
    return ModelSignature(
        inputs=Schema(inputs), outputs=Schema(outputs), params=ParamSchema(params) if params else None
    )


GOOD_IN = [
    ColSpec("string", "request_id"),
    ColSpec("long", "user_id"),
    ColSpec(Array("long"), "candidate_items"),
]
GOOD_OUT = [
    ColSpec("string", "request_id"),
    ColSpec(Array("long"), "item_ids"),
    ColSpec(Array("double"), "scores"),
]


def test_contract_signature_meets_itself_also_as_dict() -> None:
    assert check_signature(contract_signature()).ok
    assert check_signature(contract_signature().to_dict()).ok
    assert check_signature(contract_signature(with_k=False)).ok


def test_minimal_signature_with_optional_context_passes() -> None:
    inputs = [*GOOD_IN, ColSpec("long", "device", required=False), ColSpec("double", "t")]
    assert check_signature(_sig(inputs, GOOD_OUT)).ok


@pytest.mark.parametrize(
    ("inputs", "outputs", "params", "field", "reason"),
    [
        (GOOD_IN[1:], GOOD_OUT, None, "inputs.request_id", "missing"),
        (GOOD_IN[:2], GOOD_OUT, None, "inputs.candidate_items", "missing"),
        (
            [GOOD_IN[0], ColSpec("double", "user_id"), GOOD_IN[2]],
            GOOD_OUT,
            None,
            "inputs.user_id",
            "declared double",
        ),
        ([*GOOD_IN, ColSpec("string", "country")], GOOD_OUT, None, "inputs.country", "does not send it"),
        (
            [*GOOD_IN, ColSpec("double", "hour", required=False)],
            GOOD_OUT,
            None,
            "inputs.hour",
            "declared double",
        ),
        (GOOD_IN, GOOD_OUT[:2], None, "outputs.scores", "missing"),
        (
            GOOD_IN,
            [GOOD_OUT[0], ColSpec(Array("double"), "item_ids"), GOOD_OUT[2]],
            None,
            "outputs.item_ids",
            "Array(double)",
        ),
        (GOOD_IN, GOOD_OUT, [ParamSpec("k", "double", 10.0)], "params.k", "declared"),
    ],
)
def test_each_problem_is_named_by_its_field(inputs, outputs, params, field: str, reason: str) -> None:
    report = check_signature(_sig(inputs, outputs, params))
    assert not report.ok
    hits = [p for p in report.problems if p.startswith(f"{field}:")]
    assert hits and reason in hits[0], report.problems


def test_every_problem_is_reported_at_once() -> None:
    report = check_signature(_sig([ColSpec("long", "request_id")], [ColSpec(Array("double"), "items")]))
    fields = {p.split(":")[0] for p in report.problems}
    assert {"inputs.request_id", "inputs.user_id", "inputs.candidate_items", "outputs.request_id",
            "outputs.item_ids", "outputs.scores"} <= fields  # fmt: skip
    with pytest.raises(ContractError, match=r"inputs\.user_id"):
        raise ContractError("version 9", list(report.problems))


def test_no_signature_and_tensor_signature_are_refused() -> None:
    assert check_signature(None).problems[0].startswith("signature:")
    tensor = ModelSignature(inputs=Schema([TensorSpec(np.dtype("float64"), (-1, 3))]))
    problems = check_signature(tensor).problems
    assert any(p.startswith("inputs: a tensor schema") for p in problems)
    assert any(p.startswith("outputs:") for p in problems)


def test_recipe_flavour_by_tag_and_its_own_signature() -> None:
    assert not check_signature(recipe_signature(10)).ok  # without the tag it is judged by the contract
    report = check_signature(recipe_signature(10), {"recipe": "better"})
    assert report.ok and report.flavour == "recipe"
    # the tag alone does not let a foreign signature through
    assert not check_signature(contract_signature(), {"recipe": "x"}).ok


# -- the adapter ------------------------------------------------------------------------------------------


def _ctx(n: int = 5, n_items: int = 12) -> RequestContext:
    rng = np.random.default_rng(0)
    in_stock = np.ones(n_items, bool)
    in_stock[[1, 4]] = False
    age = np.full(n_items, 3.0)
    age[7] = np.inf  # not published yet
    return RequestContext(
        request_id=np.arange(100, 100 + n, dtype=np.int64),
        t=np.full(n, 10.0),
        user_id=rng.integers(0, 50, n).astype(np.int64),
        hour=np.arange(n, dtype=np.int8),
        device=(np.arange(n) % 2).astype(np.int8),
        user_segment=np.zeros(n, np.int8),
        recent_items=np.full((n, 3), -1, np.int32),
        in_stock=in_stock,
        item_age_days=age,
    )


class FakeModel:
    """A pyfunc stand-in: ranks candidates by a fixed score per item (higher id, higher score)."""

    def __init__(self, tamper=None) -> None:
        self.tamper = tamper
        self.calls: list[tuple[pd.DataFrame, dict | None]] = []
        self.metadata = None

    def predict(self, frame: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        self.calls.append((frame, params))
        k = (params or {}).get("k", 10)
        ids = [sorted(c, reverse=True)[:k] for c in frame["candidate_items"]]
        out = pd.DataFrame({"request_id": frame["request_id"], "item_ids": ids,
                            "scores": [[float(i) for i in row] for row in ids]})  # fmt: skip
        return self.tamper(out) if self.tamper else out


def test_candidates_are_published_in_stock_items_and_the_frame_follows_the_contract() -> None:
    ctx = _ctx()
    sets = candidate_sets(ctx, k=3)
    assert all(set(s) == set(range(12)) - {1, 4, 7} for s in sets)
    # fewer in stock than k: every published item is a candidate
    assert set(candidate_sets(ctx, k=10)[0]) == set(range(12)) - {7}
    frame = contract_frame(ctx, 3)
    assert list(frame.columns[:3]) == ["request_id", "user_id", "candidate_items"]
    assert frame["request_id"].tolist() == [str(r) for r in ctx.request_id]


def test_adapter_serves_a_well_behaved_model() -> None:
    model = FakeModel()
    ranker = ExternalRanker(model, "fake", accepts_k=True)
    ctx = _ctx()
    slates = ranker.recommend(ctx, 3)
    assert slates.shape == (5, 3) and (slates == [11, 10, 9]).all()
    assert model.calls[-1][1] == {"k": 3}
    ids, scores = ranker.recommend_with_scores(ctx, 4)
    assert ids.shape == scores.shape == (5, 4)
    full = ranker.scores(ctx)
    assert full.shape == (5, 12) and np.isneginf(full[:, [1, 4, 7]]).all()
    assert np.isfinite(np.delete(full, [1, 4, 7], axis=1)).all()  # every candidate scored
    assert model.calls[-1][1] == {"k": 9}


def _reverse_rows(out: pd.DataFrame) -> pd.DataFrame:
    return out.iloc[::-1].reset_index(drop=True)


def test_rows_are_matched_by_request_id_not_position() -> None:
    ranker = ExternalRanker(FakeModel(_reverse_rows), "fake", accepts_k=True)
    assert ranker.recommend(_ctx(), 2).shape == (5, 2)


def _set(column: str, row: int, value) -> callable:
    def tamper(out: pd.DataFrame) -> pd.DataFrame:
        out = out.copy()
        out.at[row, column] = value
        return out

    return tamper


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (_set("item_ids", 2, [11, 10, 7]), "not among the candidates"),  # 7 is unpublished
        (_set("item_ids", 2, [11, 99, 9]), "not among the candidates"),
        (_set("item_ids", 0, [11, 11, 9]), "ranked twice"),
        (_set("item_ids", 1, [11, 10]), "2 items ranked, 3 needed"),
        (_set("scores", 3, [3.0, 2.0]), "2 scores for 3 items"),
        (_set("scores", 3, [3.0, float("nan"), 1.0]), "not finite"),
        (_set("scores", 3, [1.0, 2.0, 3.0]), "increase"),
        (lambda out: out.drop(index=4), "missing"),
        (lambda out: out.drop(columns=["scores"]), "no column"),
        (lambda out: pd.concat([out, out.head(1)]), "repeats request ids"),
    ],
)
def test_bad_answers_raise_naming_the_request(tamper, message: str) -> None:
    ranker = ExternalRanker(FakeModel(tamper), "fake", accepts_k=True)
    with pytest.raises(RankingOutputError, match=message):
        ranker.recommend(_ctx(), 3)

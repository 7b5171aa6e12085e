"""The ranking contract: what a model registered in MLflow must accept and return to be promoted.

Any MLflow pyfunc model can be a candidate if its logged signature (``mlflow.models.ModelSignature``)
meets this contract; docs/bring-your-own.md walks through it. stagegate calls ``predict`` with one row per
request and reads one row per request back:

Input DataFrame (stagegate sends every column; the model's signature may declare any subset of the
optional ones, but must declare the three required ones and may not *require* a column not listed):

=================  ==============  ========  ==============================================================
column             MLflow type     required  meaning
=================  ==============  ========  ==============================================================
request_id         string          yes       unique per request; the output row is matched on it
user_id            long            yes       the user asking
candidate_items    Array(long)     yes       the items the model may rank (published, in stock), by id
device             long            no        0 desktop, 1 mobile
hour               long            no        local hour 0..23
user_segment       long            no        0 cold_start, 1 light, 2 heavy
t                  double          no        request time, days since the log's epoch
recent_items       Array(long)     no        the user's most recent clicked or purchased items, newest first
=================  ==============  ========  ==============================================================

Output DataFrame, one row per input row:

=================  ==============  ==================================================================
column             MLflow type     meaning
=================  ==============  ==================================================================
request_id         string          the input row's id
item_ids           Array(long)     the ranked items, best first: distinct, drawn from candidate_items,
                                   at least ``k`` of them
scores             Array(double)   one finite score per item of item_ids, non-increasing
=================  ==============  ==================================================================

An optional inference parameter ``k`` (long) tells the model the slate length; a model without it must
rank at least as many items as the longest slate any stage asks for (stagegate.models.external checks
each answer and raises on a short, unknown or repeated id).

stagegate's own recipe models (simulator.models.pyfunc) predate this contract and answer a request table
with top-k lists instead; they are accepted as the ``recipe`` flavour, recognised by the version tag
``recipe`` that :func:`simulator.models.pyfunc.log_ranker` writes and their own request signature.

The check (:func:`check_signature`) is pure: it reads a signature and returns every problem with the
field it concerns. :func:`check_version` fetches a registered version's signature from MLflow (MLflow is
imported inside it), and :func:`require_version` raises :class:`ContractError` when there is any problem,
which is what ``open-promotion`` calls before anything moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Flavour = Literal["contract", "recipe"]


@dataclass(frozen=True)
class Column:
    """One column of the contract: its name, its MLflow type (as ``str(DataType)`` or ``Array(long)``)."""

    name: str
    type: str
    required: bool
    meaning: str


INPUT_COLUMNS: tuple[Column, ...] = (
    Column("request_id", "string", True, "unique per request; the output row is matched on it"),
    Column("user_id", "long", True, "the user asking"),
    Column("candidate_items", "Array(long)", True, "the items the model may rank, by id"),
    Column("device", "long", False, "0 desktop, 1 mobile"),
    Column("hour", "long", False, "local hour 0..23"),
    Column("user_segment", "long", False, "0 cold_start, 1 light, 2 heavy"),
    Column("t", "double", False, "request time, days since the log's epoch"),
    Column("recent_items", "Array(long)", False, "recently clicked or purchased items, newest first"),
)
OUTPUT_COLUMNS: tuple[Column, ...] = (
    Column("request_id", "string", True, "the input row's id"),
    Column("item_ids", "Array(long)", True, "ranked items, best first, distinct, from candidate_items"),
    Column("scores", "Array(double)", True, "one finite score per item, non-increasing"),
)
PARAM_K = "k"
#: The version tag by which stagegate's own recipe models are recognised (set by log_ranker).
RECIPE_TAG = "recipe"
#: The request signature of the recipe flavour (simulator.models.pyfunc._signature): output columns.
RECIPE_OUTPUTS = {"user_id": "long", "items": "Array(long)"}


#: MLflow's switch for models stored as pickles (cloudpickled pyfunc objects, pickled estimators). Unpickling
#: runs whatever code the pickle names, so stagegate turns it off unless the operator sets it to "true".
PICKLE_SWITCH = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"


def refuse_pickled_models() -> None:
    """Make MLflow refuse to load pickled models in this process, unless :data:`PICKLE_SWITCH` is set.

    Called before stagegate loads any registered model (stagegate.models.loading, the router); MLflow's
    own default is to allow them."""
    import os

    os.environ.setdefault(PICKLE_SWITCH, "false")


def pickled_models_allowed() -> bool:
    import os

    return os.environ.get(PICKLE_SWITCH, "false").strip().lower() == "true"


def pickle_problems(flavors: dict[str, Any] | None) -> list[str]:
    """``model: reason`` when the logged model's pyfunc is a cloudpickled Python object (loading it runs
    the pickle) and pickled models are not allowed; a model from code (``model_code_path``) is fine."""
    pyfunc = (flavors or {}).get("python_function") or {}
    if "model_code_path" in pyfunc or "python_model" not in pyfunc or pickled_models_allowed():
        return []
    return [
        f"model: the pyfunc is a cloudpickled Python object ({pyfunc['python_model']}); loading it would "
        "run whatever code the pickle names, so stagegate refuses it: log it as a model from code "
        f"(log_model(python_model='model.py')), or set {PICKLE_SWITCH}=true to accept pickled models"
    ]


class ContractError(ValueError):
    """A registered version does not meet the ranking contract; the message lists every problem."""

    def __init__(self, what: str, problems: list[str]) -> None:
        super().__init__(f"{what} does not meet the ranking contract: " + "; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class ContractReport:
    """The outcome of a check: ``flavour`` the model was judged as, ``problems`` (``field: reason``)."""

    flavour: Flavour
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _type_name(spec: Any) -> str:
    """``long``, ``double``, ``Array(long)``, ...: one spelling for a ColSpec's type, whatever its class."""
    t = spec.type
    name = getattr(t, "name", None)
    if isinstance(name, str) and not hasattr(t, "dtype"):  # a DataType enum member
        return name
    if hasattr(t, "dtype"):  # mlflow.types.schema.Array
        inner = t.dtype
        inner_name = getattr(inner, "name", None) if not hasattr(inner, "dtype") else None
        return f"Array({inner_name or str(inner)})"
    return str(t)


def _columns(schema: Any, where: str, problems: list[str]) -> dict[str, tuple[str, bool]] | None:
    """``{name: (type, required)}`` of a column-based schema; None (with a problem) otherwise."""
    if schema is None:
        problems.append(f"{where}: the signature declares no {where} schema")
        return None
    if getattr(schema, "is_tensor_spec", lambda: False)():
        problems.append(f"{where}: a tensor schema; the contract needs named columns (a DataFrame)")
        return None
    out = {}
    for spec in schema.inputs:
        if spec.name is None:
            problems.append(f"{where}: an unnamed column ({_type_name(spec)}); every column needs a name")
            continue
        out[spec.name] = (_type_name(spec), bool(getattr(spec, "required", True)))
    return out


def _as_signature(obj: Any) -> Any:
    """A ModelSignature from a ModelInfo/Model (``.signature``), a signature, or a dict (``to_dict``)."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        from mlflow.models import ModelSignature

        return ModelSignature.from_dict(obj)
    if hasattr(obj, "inputs") and hasattr(obj, "outputs"):
        return obj
    return getattr(obj, "signature", None)


def check_signature(model_info_or_signature: Any, tags: dict[str, str] | None = None) -> ContractReport:
    """Every way a model's signature breaks the ranking contract, each as ``field: reason``.

    ``model_info_or_signature`` is an ``mlflow.models.ModelInfo`` (what ``log_model`` and
    ``get_model_info`` return), a ``ModelSignature`` or its ``to_dict()``. ``tags`` are the registered
    version's tags: a version tagged ``recipe`` is judged as stagegate's own recipe flavour.
    """
    signature = _as_signature(model_info_or_signature)
    if signature is None:
        return ContractReport(
            "contract", ("signature: the model was logged without a signature (log_model(signature=...))",)
        )
    problems: list[str] = []
    if tags and RECIPE_TAG in tags:
        outputs = _columns(signature.outputs, "outputs", problems)
        inputs = _columns(signature.inputs, "inputs", problems)
        if inputs is not None and "user_id" not in inputs:
            problems.append("inputs.user_id: a recipe model must take user_id")
        if outputs is not None:
            for name, type_ in RECIPE_OUTPUTS.items():
                if name not in outputs:
                    problems.append(f"outputs.{name}: missing (recipe flavour returns {type_})")
                elif outputs[name][0] != type_:
                    problems.append(f"outputs.{name}: is {outputs[name][0]}, recipe flavour returns {type_}")
        return ContractReport("recipe", tuple(problems))

    inputs = _columns(signature.inputs, "inputs", problems)
    if inputs is not None:
        known = {c.name: c for c in INPUT_COLUMNS}
        for column in INPUT_COLUMNS:
            if column.required and column.name not in inputs:
                problems.append(f"inputs.{column.name}: missing ({column.type}, {column.meaning})")
        for name, (type_, required) in inputs.items():
            if name not in known:
                if required:
                    problems.append(
                        f"inputs.{name}: required, but the contract does not send it "
                        f"(it sends {', '.join(known)}); mark it optional or drop it"
                    )
                continue
            if type_ != known[name].type:
                problems.append(f"inputs.{name}: declared {type_}, the contract sends {known[name].type}")
    outputs = _columns(signature.outputs, "outputs", problems)
    if outputs is not None:
        for column in OUTPUT_COLUMNS:
            if column.name not in outputs:
                problems.append(f"outputs.{column.name}: missing ({column.type}, {column.meaning})")
            elif outputs[column.name][0] != column.type:
                problems.append(
                    f"outputs.{column.name}: declared {outputs[column.name][0]}, the contract reads "
                    f"{column.type}"
                )
    params = getattr(signature, "params", None)
    for param in getattr(params, "params", None) or []:
        if param.name == PARAM_K and str(getattr(param.dtype, "name", param.dtype)) != "long":
            problems.append(f"params.{PARAM_K}: declared {param.dtype}, the contract passes a long")
    return ContractReport("contract", tuple(problems))


def contract_signature(with_k: bool = True) -> Any:
    """The contract as an MLflow ModelSignature, to pass to ``mlflow.pyfunc.log_model(signature=...)``."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    def spec(column: Column) -> Any:
        type_ = Array(column.type[6:-1]) if column.type.startswith("Array(") else column.type
        return ColSpec(type_, column.name, required=column.required)

    params = ParamSchema([ParamSpec(PARAM_K, "long", 10)]) if with_k else None
    return ModelSignature(
        inputs=Schema([spec(c) for c in INPUT_COLUMNS]),
        outputs=Schema([spec(c) for c in OUTPUT_COLUMNS]),
        params=params,
    )


def check_version(model: str, version: str, tracking_uri: str | None = None) -> ContractReport:
    """The contract check of registered version ``version`` of ``model`` at ``tracking_uri`` (default:
    MLflow's current one, which is then set for the registry as well). The signature is read from the
    version's MLmodel file, the tags from the registry."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if tracking_uri is not None:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    client = mlflow.MlflowClient()
    tags = dict(client.get_model_version(model, str(version)).tags or {})
    try:
        info = mlflow.models.get_model_info(f"models:/{model}/{version}")
    except (MlflowException, OSError) as exc:
        return ContractReport("contract", (f"model: cannot read the logged model's MLmodel file: {exc}",))
    report = check_signature(info, tags)
    problems = pickle_problems(getattr(info, "flavors", None))
    return ContractReport(report.flavour, report.problems + tuple(problems)) if problems else report


def require_version(model: str, version: str, tracking_uri: str | None = None) -> ContractReport:
    """:func:`check_version`, raising ContractError (every problem listed) unless the version meets it."""
    report = check_version(model, version, tracking_uri)
    if not report.ok:
        raise ContractError(f"version {version} of {model!r}", list(report.problems))
    return report

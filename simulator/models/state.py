"""A trained recipe model as data only: a JSON description plus numpy arrays, and back.

Why: a registered model used to be a cloudpickled Python object, and unpickling it runs whatever code the
pickle names. Anyone who could write to the artifact store could make ``promote`` run code. Here the
fitted state is written as

- ``ranker.json``: the model tree (family per node, scalars, knobs, the recipe), JSON only;
- ``ranker.npz``: every array, loaded with ``allow_pickle=False`` (object arrays are refused);

and read back by the installed package's own classes, chosen by family from a fixed table (the files
cannot name a class or a function). Reading rebuilds each object with ``__new__`` and its saved attributes
instead of re-running ``__init__``, so derived arrays (normalised embeddings, z-scores) are the saved bytes
and the loaded model gives the same slates and scores, bit for bit, as the one that was trained.

:func:`write_state` fails at log time on an attribute it does not know how to store (a new family's
attribute type must be added here, on purpose), and :func:`read_state` fails closed with
:class:`RecipeStateError` naming the file and the field on anything it does not expect.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from simulator.models.common import BaseRanker

FORMAT = "stagegate-recipe-ranker"
FORMAT_VERSION = 1
STATE_JSON = "ranker.json"
STATE_ARRAYS = "ranker.npz"
_ATTR = re.compile(r"^_?[a-z][a-z0-9_]*$")  # plain attribute names only (no dunders, no dots)


class RecipeStateError(ValueError):
    """A recipe model's saved state that cannot be read; the message names the file, the field, the reason."""


def _families() -> dict[str, type[BaseRanker]]:
    """Family name -> the installed class that serves it: the only classes a state file can produce."""
    from simulator.models.blend import Blend
    from simulator.models.content import ContentRanker
    from simulator.models.itemknn import ItemKNN
    from simulator.models.logistic import PublicLogistic
    from simulator.models.mf import MatrixFactorization
    from simulator.models.popularity import Popularity
    from simulator.models.reranker import Reranker

    classes: list[type[BaseRanker]] = [
        Popularity,
        ItemKNN,
        MatrixFactorization,
        PublicLogistic,
        ContentRanker,
        Blend,
        Reranker,
    ]
    return {cls.family: cls for cls in classes}


def _knobs_model(family: str) -> type[BaseModel] | None:
    from simulator.models.recipe import _knob_models

    return _knob_models().get("logistic" if family == "features" else family)


class _Writer:
    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def array(self, value: np.ndarray, where: str) -> str:
        if value.dtype.hasobject:
            raise TypeError(f"{where}: an object array cannot be stored without pickle")
        key = f"a{len(self.arrays)}"
        # np.ascontiguousarray would drop a broadcast view's strides but keep its values: what we want
        self.arrays[key] = np.ascontiguousarray(value)
        return key

    def value(self, value: Any, where: str, family: str) -> dict[str, Any]:
        from simulator.models.logistic import _Features
        from simulator.models.recipe import Recipe

        if isinstance(value, BaseRanker):
            return {"ranker": self.node(value, where)}
        if isinstance(value, np.ndarray):
            return {"array": self.array(value, where)}
        if isinstance(value, np.generic):  # a numpy scalar keeps its dtype as a 0-d array
            return {"scalar": self.array(np.asarray(value), where)}
        if value is None or isinstance(value, bool | int | float | str):
            return {"value": value}
        if isinstance(value, Recipe):
            return {"recipe": value.model_dump(mode="json")}
        if isinstance(value, BaseModel):
            if type(value) is not _knobs_model(family):
                raise TypeError(f"{where}: {type(value).__name__} is not the knobs of family {family!r}")
            return {"knobs": value.model_dump(mode="json")}
        if isinstance(value, _Features):
            return {"features": self.attrs(value, where, "features")}
        if (
            isinstance(value, list)
            and value
            and all(isinstance(v, tuple) and len(v) == 2 and isinstance(v[1], BaseRanker) for v in value)
        ):  # a blend's (weight, model) components
            return {
                "components": [
                    {"weight": self.value(w, f"{where}[{i}].weight", family), "ranker": self.node(m, where)}
                    for i, (w, m) in enumerate(value)
                ]
            }
        if isinstance(value, list) and all(isinstance(v, bool | int | float | str) for v in value):
            return {"value": list(value)}
        raise TypeError(f"{where}: cannot store a {type(value).__name__} as data")

    def attrs(self, obj: Any, where: str, family: str) -> dict[str, Any]:
        return {name: self.value(v, f"{where}.{name}", family) for name, v in vars(obj).items()}

    def node(self, ranker: BaseRanker, where: str) -> dict[str, Any]:
        family = type(ranker).family
        if _families().get(family) is not type(ranker):
            raise TypeError(f"{where}: {type(ranker).__name__} is not a built-in recipe family")
        return {"family": family, "attrs": self.attrs(ranker, f"{where}({family})", family)}


def write_state(ranker: BaseRanker, extra: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    """Write ``ranker`` (and ``extra``: name -> array or JSON scalar) as ranker.json + ranker.npz."""
    writer = _Writer()
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "root": writer.node(ranker, "ranker"),
        "extra": {name: writer.value(v, f"extra.{name}", "") for name, v in extra.items()},
    }
    directory.mkdir(parents=True, exist_ok=True)
    json_path, npz_path = directory / STATE_JSON, directory / STATE_ARRAYS
    json_path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    with npz_path.open("wb") as fh:
        np.savez(fh, **writer.arrays)
    return json_path, npz_path


class _Reader:
    def __init__(self, arrays: dict[str, np.ndarray], source: str) -> None:
        self.arrays = arrays
        self.source = source
        self.used: set[str] = set()

    def fail(self, where: str, reason: str) -> RecipeStateError:
        return RecipeStateError(f"{self.source}: {where}: {reason}")

    def array(self, key: Any, where: str) -> np.ndarray:
        if not isinstance(key, str) or key not in self.arrays:
            raise self.fail(where, f"array {key!r} is not in {STATE_ARRAYS}")
        self.used.add(key)
        return self.arrays[key]

    def value(self, enc: Any, where: str, family: str) -> Any:
        from simulator.models.logistic import _Features
        from simulator.models.recipe import Recipe

        if not isinstance(enc, dict) or len(enc) != 1:
            raise self.fail(where, "expected one {kind: value} entry")
        ((kind, raw),) = enc.items()
        if kind == "value":
            ok = raw is None or isinstance(raw, bool | int | float | str)
            ok = ok or (isinstance(raw, list) and all(isinstance(v, bool | int | float | str) for v in raw))
            if not ok:
                raise self.fail(where, "a value must be a JSON scalar or a list of them")
            return raw
        if kind == "array":
            return self.array(raw, where)
        if kind == "scalar":
            arr = self.array(raw, where)
            if arr.ndim != 0:
                raise self.fail(where, f"a scalar must be a 0-d array, got shape {arr.shape}")
            return arr[()]
        if kind == "ranker":
            return self.node(raw, where)
        if kind == "recipe":
            try:
                return Recipe.model_validate(raw)
            except ValidationError as err:
                raise self.fail(where, f"not a valid recipe ({err.errors()[0]['msg']})") from None
        if kind == "knobs":
            model = _knobs_model(family)
            if model is None:
                raise self.fail(where, f"family {family!r} has no knobs")
            try:
                return model.model_validate(raw)
            except ValidationError as err:
                raise self.fail(where, f"invalid knobs ({err.errors()[0]['msg']})") from None
        if kind == "features" and family == "logistic":
            return self.build(_Features, raw, where, "features")
        if kind == "components" and family == "blend" and isinstance(raw, list):
            out = []
            for i, comp in enumerate(raw):
                if not isinstance(comp, dict) or set(comp) != {"weight", "ranker"}:
                    raise self.fail(f"{where}[{i}]", "a component is {weight, ranker}")
                out.append(
                    (
                        self.value(comp["weight"], f"{where}[{i}].weight", family),
                        self.node(comp["ranker"], where),
                    )
                )
            return out
        raise self.fail(where, f"unknown entry {kind!r} (for family {family!r})")

    def build(self, cls: type, attrs: Any, where: str, family: str) -> Any:
        if not isinstance(attrs, dict):
            raise self.fail(where, "attributes must be a mapping")
        obj = cls.__new__(cls)  # the saved attributes are the whole state: __init__ would recompute them
        for name, enc in attrs.items():
            if not isinstance(name, str) or not _ATTR.match(name):
                raise self.fail(where, f"attribute name {name!r} is not allowed")
            obj.__dict__[name] = self.value(enc, f"{where}.{name}", family)
        return obj

    def node(self, raw: Any, where: str) -> BaseRanker:
        if not isinstance(raw, dict) or set(raw) != {"family", "attrs"}:
            raise self.fail(where, "a model node is {family, attrs}")
        family = raw["family"]
        cls = _families().get(family) if isinstance(family, str) else None
        if cls is None:
            raise self.fail(where, f"unknown family {family!r} (built-in: {', '.join(sorted(_families()))})")
        ranker = self.build(cls, raw["attrs"], f"{where}({family})", family)
        for needed in ("name", "n_items"):
            if needed not in ranker.__dict__:
                raise self.fail(f"{where}({family})", f"missing attribute {needed!r}")
        return ranker


def read_state(json_path: Path, npz_path: Path) -> tuple[BaseRanker, dict[str, Any]]:
    """The model and the extras that :func:`write_state` wrote; RecipeStateError on anything unexpected."""
    source = str(json_path)
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RecipeStateError(f"{source}: cannot read the model state ({err})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise RecipeStateError(f"{source}: not a stagegate recipe model state (format {FORMAT!r} expected)")
    if doc.get("format_version") != FORMAT_VERSION:
        raise RecipeStateError(
            f"{source}: state format version {doc.get('format_version')!r}, this stagegate reads "
            f"{FORMAT_VERSION}"
        )
    try:
        # allow_pickle=False: an object array in the file raises here instead of unpickling anything
        with np.load(npz_path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise RecipeStateError(f"{npz_path}: cannot read the model's arrays ({err})") from None
    reader = _Reader(arrays, source)
    ranker = reader.node(doc.get("root"), "ranker")
    extra_raw = doc.get("extra", {})
    if not isinstance(extra_raw, dict):
        raise RecipeStateError(f"{source}: extra: must be a mapping")
    extra = {name: reader.value(enc, f"extra.{name}", "") for name, enc in extra_raw.items()}
    return ranker, extra

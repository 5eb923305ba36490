"""DataFrames out: predictions, neighbours and profiles as polars (or pandas) frames, one row per
item, and back.

Nested model fields stay nested: ``evidence``, ``against``, ``voters``, ``cites`` and the
profile's ``claims`` are ``List(Struct)`` columns, ``Neighbor.meta`` a ``Struct``. Every column
is typed from the pydantic model, so a frame's schema depends only on its kind (``prediction``,
``neighbor``, ``profile``; see :func:`schema`), never on the data:

* ``dict`` fields (``probabilities``, ``knn_vote``, ``head_probabilities``, profile ``facts``)
  are ``List(Struct{key, value})``, Arrow's map layout: label sets differ between taxonomies
  and rows (``knn_vote`` holds only the labels that got votes), an empty dict is not a null, and
  key order survives. Wide per-label columns:
  ``df.explode("probabilities").unnest("probabilities").pivot("key", index="session_id")``.
* ``Any`` fields (``Evidence.value``, ``ProfileFact.value``, ``ProfileClaim.value``) are
  JSON text (None: null): one Arrow column has one type, while a fact's value may be an int,
  float, bool, str, list or None from row to row; a union column would turn ``1`` into ``1.0``
  and ``True`` into ``1``. JSON keeps each value's type, and reads the same in parquet, jsonl
  and csv.

So :func:`from_polars` rebuilds the models field for field. Files: :func:`write_frame` writes
parquet, jsonl or csv atomically; :func:`read_frame` reads them back with the kind's schema
(csv holds no nested columns: there they are JSON text, decoded on reading).

An empty list has no items to tell its kind: pass ``kind=`` (``to_polars([], kind="prediction")``
is an empty frame with the prediction schema); without it, an empty list is a ConfigError rather
than a frame with a guessed schema that would miss the columns the caller expects.

Example:
    >>> from behavior_rag.types import Evidence, PatternPrediction
    >>> p = PatternPrediction(session_id="s1", label="browser", probabilities={"browser": 1.0},
    ...                       confidence=1.0, abstained=False, explanation="browser: 9 views",
    ...                       evidence=[Evidence(fact="n_view", value=9, events=[0, 1])])
    >>> df = to_polars([p])
    >>> df.height, df["evidence"].list.len().to_list(), df["evidence"][0][0]["value"]
    (1, [1], '9')
    >>> from_polars(df) == [p]
    True
"""

from __future__ import annotations

import io
import json
import types
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import polars as pl
from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from behavior_rag.atomic import replace_file
from behavior_rag.errors import ConfigError, DataError
from behavior_rag.profile import UserProfile
from behavior_rag.retrieve import Neighbor
from behavior_rag.types import PatternPrediction

Kind = Literal["prediction", "neighbor", "profile"]
FileFormat = Literal["parquet", "jsonl", "csv"]
MODELS: dict[str, type[BaseModel]] = {"prediction": PatternPrediction, "neighbor": Neighbor,
                                      "profile": UserProfile}
FILE_FORMATS: tuple[str, ...] = ("parquet", "jsonl", "csv")
SUFFIXES: dict[str, str] = {".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl",
                            ".csv": "csv"}
_SCALARS: dict[Any, pl.DataType] = {str: pl.String(), int: pl.Int64(), float: pl.Float64(),
                                    bool: pl.Boolean(), datetime: pl.Datetime("us", "UTC")}
_Items = Iterable[PatternPrediction] | Iterable[Neighbor] | Iterable[UserProfile]


# -- types: one walk over the model's annotations decides each column's dtype and encoding --

def _unwrap(tp: Any) -> Any:
    """``X | None`` -> X; a union of several types -> Any (stored as JSON, like Any)."""
    if get_origin(tp) in (Union, types.UnionType):
        rest = [a for a in get_args(tp) if a is not type(None)]
        return rest[0] if len(rest) == 1 else Any
    return tp


def _dtype(tp: Any) -> pl.DataType:
    tp = _unwrap(tp)
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any or origin is Literal:
        return pl.String()
    if origin is list:
        return pl.List(_dtype(args[0]))
    if origin is dict:
        return pl.List(pl.Struct({"key": pl.String(), "value": _dtype(args[1])}))
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return pl.Struct({n: _dtype(f.annotation) for n, f in tp.model_fields.items()})
    if tp in _SCALARS:
        return _SCALARS[tp]
    raise TypeError(f"no column type for {tp!r}")  # a model grew a field type: add it here


def _cell(tp: Any, v: Any) -> Any:
    """A model value as the cell polars builds from ``_dtype(tp)``."""
    tp = _unwrap(tp)
    origin, args = get_origin(tp), get_args(tp)
    if v is None:
        return None
    if tp is Any:
        return json.dumps(to_jsonable_python(v), ensure_ascii=False)
    if origin is list:
        return [_cell(args[0], x) for x in v]
    if origin is dict:
        return [{"key": k, "value": _cell(args[1], x)} for k, x in v.items()]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return {n: _cell(f.annotation, getattr(v, n)) for n, f in tp.model_fields.items()}
    return v


def _value(tp: Any, c: Any) -> Any:
    """The inverse of :func:`_cell`: what ``model_validate`` rebuilds the field from."""
    tp = _unwrap(tp)
    origin, args = get_origin(tp), get_args(tp)
    if c is None:
        return None
    if tp is Any:
        return json.loads(c)
    if origin is list:
        return [_value(args[0], x) for x in c]
    if origin is dict:
        return {d["key"]: _value(args[1], d["value"]) for d in c}
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return {n: _value(f.annotation, c[n]) for n, f in tp.model_fields.items()}
    return c


def schema(kind: Kind) -> pl.Schema:
    """The frame schema of ``kind`` (column name -> polars dtype), in model field order."""
    return pl.Schema({n: _dtype(f.annotation) for n, f in _model(kind).model_fields.items()})


def _model(kind: str) -> type[BaseModel]:
    if kind not in MODELS:
        raise ConfigError(f"unknown kind {kind!r}; known: {sorted(MODELS)}", field="kind",
                          value=kind)
    return MODELS[kind]


# -- models <-> frames --

def _kind_of(items: list[Any], kind: str | None) -> str:
    found = set()
    for x in items:
        k = next((k for k, m in MODELS.items() if isinstance(x, m)), None)
        if k is None:
            raise ConfigError(f"cannot make a frame of {type(x).__name__}: expected "
                              "PatternPrediction, Neighbor or UserProfile items (model_validate "
                              "dicts first)", field="items", value=type(x).__name__)
        found.add(k)
    if len(found) > 1:
        raise ConfigError(f"mixed kinds in one frame: {sorted(found)}; make one frame per kind",
                          field="items", value=sorted(found))
    if kind is not None:
        _model(kind)
        if found and found != {kind}:
            raise ConfigError(f"the items are of kind {found.pop()}, not {kind}", field="kind",
                              value=kind)
        return kind
    if not found:
        raise ConfigError("an empty list has no kind: pass kind='prediction', 'neighbor' or "
                          "'profile' for an empty frame with that schema", field="kind")
    return found.pop()


def to_polars(items: _Items | BaseModel, *, kind: Kind | None = None) -> pl.DataFrame:
    """One row per prediction, neighbour or profile (a single model: one row), nested fields
    as Struct/List columns (see the module docstring). ``kind`` is needed for an empty list."""
    items = [items] if isinstance(items, BaseModel) else list(items)
    k = _kind_of(items, kind)
    fields = MODELS[k].model_fields
    rows = [{n: _cell(f.annotation, getattr(x, n)) for n, f in fields.items()} for x in items]
    return pl.DataFrame(rows, schema=schema(k), orient="row")


def to_pandas(items: _Items | BaseModel, *, kind: Kind | None = None):
    """:func:`to_polars` as a pandas DataFrame with Arrow-backed columns: nested cells stay
    lists and dicts (numpy-backed columns would turn them into object arrays and None
    strings into NaN). Needs pandas and pyarrow."""
    frame = to_polars(items, kind=kind)
    try:
        import pandas  # noqa: F401  (polars imports it itself; checked here for the message)
        import pyarrow  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"to_pandas needs pandas and pyarrow ({e.name} is missing): "
                          "pip install 'behavior_rag[pandas]'", field="pandas", value=e.name) from e
    return frame.to_pandas(use_pyarrow_extension_array=True)


def _frame_kind(frame: pl.DataFrame, kind: str | None) -> str:
    have = set(frame.columns)
    if kind is not None:
        lacks = sorted(set(schema(kind)) - have)
        if lacks:
            raise ConfigError(f"a {kind} frame needs the columns {lacks}", field="columns",
                              value=frame.columns[:20])
        return kind
    fits = [k for k in MODELS if set(schema(k)) <= have]
    if len(fits) == 1:
        return fits[0]
    if fits:
        raise ConfigError(f"the frame has the columns of several kinds {fits}: pass kind=",
                          field="kind")
    missing = {k: sorted(set(schema(k)) - have) for k in MODELS}
    best = min(missing, key=lambda k: len(missing[k]))
    raise ConfigError(f"not a frame of predictions, neighbours or profiles: closest is {best}, "
                      f"which lacks {missing[best]}", field="columns", value=frame.columns[:20])


def _conform(frame: pl.DataFrame, kind: str) -> pl.DataFrame:
    """The kind's columns in its dtypes: JSON text (a csv's nested columns) is decoded, other
    differences cast; extra columns are left out."""
    want = schema(kind)
    cols = []
    for name, dtype in want.items():
        col, have = pl.col(name), frame.schema[name]
        if have == dtype:
            cols.append(col)
        elif have == pl.String and isinstance(dtype, (pl.List, pl.Struct)):
            cols.append(col.str.json_decode(dtype))
        else:
            cols.append(col.cast(dtype))
    try:
        return frame.select(cols)
    except pl.exceptions.PolarsError as e:
        raise ConfigError(f"the frame's columns do not fit the {kind} schema ({e}); read files "
                          "with behavior_rag.frames.read_frame(path, kind)", field="columns"
                          ) from e


def from_polars(frame: pl.DataFrame, *, kind: Kind | None = None
                ) -> list[PatternPrediction] | list[Neighbor] | list[UserProfile]:
    """The models a frame from :func:`to_polars` (or a file of one) holds, in row order.
    ``kind`` is inferred from the columns when not given; extra columns are ignored."""
    k = _frame_kind(frame, kind)
    model, fields = MODELS[k], MODELS[k].model_fields
    out = []
    for i, row in enumerate(_conform(frame, k).iter_rows(named=True)):
        try:
            out.append(model.model_validate(
                {n: _value(f.annotation, row[n]) for n, f in fields.items()}))
        except (ValidationError, ValueError) as e:  # ValueError: bad JSON text in a cell
            raise DataError(f"row is not a valid {k}: {e}", row=i + 1, field="frame") from e
    return out


# -- files --

def csv_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with its nested columns as JSON text (csv cells hold scalars only); a null
    list or struct stays an empty cell."""
    nested = [n for n, d in frame.schema.items() if isinstance(d, (pl.List, pl.Struct))]
    # polars JSON-encodes structs only: wrap the column in a one-field struct, strip the wrapper
    enc = [pl.when(pl.col(n).is_null()).then(None).otherwise(
        pl.struct(n).struct.json_encode().str.strip_prefix(f'{{"{n}":').str.strip_suffix("}")
    ).alias(n) for n in nested]
    return frame.with_columns(enc)


def encode(frame: pl.DataFrame, fmt: FileFormat) -> bytes:
    """The bytes of ``frame`` as a parquet, jsonl (one JSON object a row) or csv file."""
    buf = io.BytesIO()
    if fmt == "parquet":
        frame.write_parquet(buf)
    elif fmt == "jsonl":
        frame.write_ndjson(buf)
    elif fmt == "csv":
        csv_frame(frame).write_csv(buf)
    else:
        raise ConfigError(f"unknown file format {fmt!r}; known: {list(FILE_FORMATS)}",
                          field="format", value=fmt)
    return buf.getvalue()


def write_frame(frame: pl.DataFrame, path: str | Path, fmt: FileFormat | None = None) -> Path:
    """Write ``frame`` to ``path`` atomically (``fmt`` from the suffix when not given)."""
    return replace_file(path, encode(frame, fmt or _suffix_format(Path(path))))


def _suffix_format(path: Path) -> str:
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"cannot tell the file format of {path.name!r}: pass one of "
                          f"{list(FILE_FORMATS)}", field="format", value=str(path))
    return fmt


def read_frame(path: str | Path, kind: Kind, fmt: FileFormat | None = None) -> pl.DataFrame:
    """A file from :func:`write_frame` back as a frame in ``kind``'s schema (jsonl and csv
    carry no types: the schema restores them)."""
    path = Path(path)
    fmt = fmt or _suffix_format(path)
    want = schema(kind)
    if fmt == "parquet":
        frame = pl.read_parquet(path)
    elif fmt == "jsonl":
        frame = pl.read_ndjson(path, schema=want)
    elif fmt == "csv":
        flat = {n: pl.String() if isinstance(d, (pl.List, pl.Struct)) else d
                for n, d in want.items()}
        frame = pl.read_csv(path, schema=flat)
    else:
        raise ConfigError(f"unknown file format {fmt!r}; known: {list(FILE_FORMATS)}",
                          field="format", value=fmt)
    return _conform(frame, kind)

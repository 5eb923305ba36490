"""Outcome targets: labels computed from the log itself, and what the model may see.

A target is a small YAML file under ``prompts/targets/`` (``purchase``, ``cart``,
``return_visit``, ``repeat_purchase``) or a path to your own. It says two things:

* the **label rule** (:class:`LabelRule`): the session contains an event of some types
  (``contains``: a purchase, a cart), or the same user comes back within N days
  (``comes_back``: with any event, or with a purchase), which needs the user's later sessions;
* the **prediction point** (:class:`InputCut`): what the model may see of the session, so that
  the outcome it predicts is never in its input:

  ============================  ==========================================================
  ``before:cart,purchase``      events before the first event of those types (purchase's
                                default)
  ``first:N``                   the first N events
  ``minutes:N``                 events at most N minutes after the session's first event
  ``types:view``                only events of the listed types (the RecSys 2015 setting:
                                clicks seen, purchases hidden)
  ``all``                       the whole session (targets about *later* sessions)
  ============================  ==========================================================

A target names its taxonomy: its two labels are that taxonomy's labels, so ``fit`` fits it.
:func:`behavior_rag.labels.outcomes.label_sessions` labels and cuts a log by a target.

Example:
    >>> from behavior_rag.synth import generate
    >>> t = load_target("purchase")
    >>> str(t.input), t.taxonomy, t.labels()
    ('before:cart,purchase', 'purchase_intent', ('will_buy', 'no_purchase'))
    >>> t.cut(generate(1, seed=2).sessions[0]).n_events >= 1
    True
    >>> InputCut.parse("first:5").cut(generate(1, seed=2).sessions[0]).n_events <= 5
    True
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_serializer,
    model_validator,
)

from behavior_rag.errors import ConfigError, DataError
from behavior_rag.resources import prompts_dir
from behavior_rag.taxonomy import Taxonomy, load_taxonomy, read_mapping
from behavior_rag.types import EVENT_TYPES, Session

_SUFFIXES = (".yaml", ".yml", ".json")
CUT_KINDS: tuple[str, ...] = ("before", "first", "minutes", "types", "all")
_CUT_HELP = ("before:cart,purchase | first:5 | minutes:10 | types:view | all (event types: "
             + ", ".join(EVENT_TYPES) + ")")


class EmptyAfterCut(DataError):
    """Nothing of a session is left before its prediction point (e.g. it starts with a cart):
    there is nothing to predict from."""


def _types(spec: str, text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(","))
    if not text.strip() or any(not t for t in names):
        raise ConfigError(f"input cut {spec!r} needs a comma-separated list of event types "
                          f"after the colon ({_CUT_HELP})", field="input", value=spec)
    bad = [t for t in names if t not in EVENT_TYPES]
    if bad:
        raise ConfigError(f"input cut {spec!r}: unknown event type(s) {bad}", field="input",
                          value=spec, known=list(EVENT_TYPES))
    if len(set(names)) != len(names):
        raise ConfigError(f"input cut {spec!r} names an event type twice", field="input",
                          value=spec)
    return names


class InputCut(BaseModel):
    """The prediction point: which of a session's events the model may see.

    Written and read as its spec string (``"before:cart,purchase"``), which is also how a
    fitted model records it.

    Example:
        >>> c = InputCut.parse("before:cart,purchase")
        >>> c.kind, c.types, str(c)
        ('before', ('cart', 'purchase'), 'before:cart,purchase')
        >>> InputCut.parse("minutes:2.5").minutes
        2.5
        >>> InputCut.parse("first:0")
        Traceback (most recent call last):
        ...
        behavior_rag.errors.ConfigError: input cut 'first:0': N must be a whole number >= 1
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["before", "first", "minutes", "types", "all"]
    types: tuple[str, ...] = ()
    n: int | None = Field(None, ge=1)
    minutes: float | None = Field(None, gt=0, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if isinstance(data, str):
            return cls._fields_of(data)
        return data

    @model_validator(mode="after")
    def _complete(self) -> InputCut:
        need = {"before": "types", "types": "types", "first": "n", "minutes": "minutes"}
        field = need.get(self.kind)
        if field and not getattr(self, field):
            raise ValueError(f"input cut {self.kind!r} needs {field}")
        bad = [t for t in self.types if t not in EVENT_TYPES]
        if bad:
            raise ValueError(f"unknown event type(s) {bad}; known: {list(EVENT_TYPES)}")
        return self

    @model_serializer
    def _as_text(self) -> str:
        return str(self)

    @classmethod
    def parse(cls, spec: str | InputCut) -> InputCut:
        """``"before:cart,purchase"``, ``"first:5"``, ``"minutes:10"``, ``"types:view"`` or
        ``"all"``; anything else is a :class:`ConfigError` naming the forms it takes."""
        if isinstance(spec, InputCut):
            return spec
        return cls.model_construct(**cls._fields_of(spec))

    @staticmethod
    def _fields_of(spec: str) -> dict[str, Any]:
        if not isinstance(spec, str):
            raise ConfigError(f"input cut must be text like {_CUT_HELP}", field="input",
                              value=repr(spec))
        text = spec.strip()
        kind, sep, arg = text.partition(":")
        kind = kind.strip().lower()
        if kind not in CUT_KINDS:
            raise ConfigError(f"unknown input cut {spec!r}; use {_CUT_HELP}", field="input",
                              value=spec, known=list(CUT_KINDS))
        if kind == "all":
            if arg.strip():
                raise ConfigError(f"input cut 'all' takes no argument, got {spec!r}",
                                  field="input", value=spec)
            return {"kind": "all"}
        if not sep:
            raise ConfigError(f"input cut {spec!r} needs an argument after '{kind}:' "
                              f"({_CUT_HELP})", field="input", value=spec)
        arg = arg.strip()
        if kind in ("before", "types"):
            return {"kind": kind, "types": _types(spec, arg)}
        if kind == "first":
            n = int(arg) if re.fullmatch(r"\d{1,9}", arg) else 0
            if n < 1:
                raise ConfigError(f"input cut {spec!r}: N must be a whole number >= 1",
                                  field="input", value=spec)
            return {"kind": kind, "n": n}
        try:
            minutes = float(arg)
        except ValueError:
            minutes = math.nan
        if not (math.isfinite(minutes) and minutes > 0):
            raise ConfigError(f"input cut {spec!r}: N must be a number of minutes > 0",
                              field="input", value=spec)
        return {"kind": kind, "minutes": minutes}

    def __str__(self) -> str:
        if self.kind in ("before", "types"):
            return f"{self.kind}:{','.join(self.types)}"
        if self.kind == "first":
            return f"first:{self.n}"
        if self.kind == "minutes":
            assert self.minutes is not None
            return f"minutes:{self.minutes:g}"
        return "all"

    def keep(self, session: Session) -> list[int]:
        """Positions (0-based, in order) of the events the model may see."""
        ev = session.events
        if self.kind == "all":
            return list(range(len(ev)))
        if self.kind == "before":
            stop = next((i for i, e in enumerate(ev) if e.type in self.types), len(ev))
            return list(range(stop))
        if self.kind == "first":
            assert self.n is not None
            return list(range(min(self.n, len(ev))))
        if self.kind == "minutes":
            if not ev:
                return []
            assert self.minutes is not None
            end = ev[0].timestamp + timedelta(minutes=self.minutes)
            return [i for i, e in enumerate(ev) if e.timestamp <= end]
        return [i for i, e in enumerate(ev) if e.type in self.types]

    def cut(self, session: Session, *, min_events: int = 1) -> Session:
        """``session`` with only the events the model may see. Under any cut but ``all`` the
        session's ``aggregates`` (source totals over the whole session) are dropped too: they
        would tell what happened after the prediction point. Fewer than ``min_events`` events
        left: :class:`EmptyAfterCut`."""
        if self.kind == "all":
            kept = session
        else:
            events = [session.events[i] for i in self.keep(session)]
            kept = session.model_copy(update={"events": events, "aggregates": {}})
        if kept.n_events < min_events:
            raise EmptyAfterCut(
                f"session {session.session_id!r} has {kept.n_events} event(s) before its "
                f"prediction point ({self}), fewer than {min_events}: nothing to predict from",
                field="input", value=str(self), session_id=session.session_id,
                events=session.n_events)
        return kept


class LabelRule(BaseModel):
    """How a session's outcome label is computed from the log.

    * ``contains``: the session has an event of one of ``types``;
    * ``comes_back``: the same user has an event of one of ``types`` (empty: any event) in
      another session, after this session's last event and at most ``days`` later. Only
      sessions whose whole window lies inside the log are labelled (a later visit past the
      log's end would be unseen, not absent).

    ``eligible`` (empty: every session): only sessions with an event of these types get a
    label, e.g. repeat purchase asks only about sessions that bought.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["contains", "comes_back"]
    types: list[Literal["view", "search", "cart", "remove_from_cart", "fav", "purchase"]] = \
        Field(default_factory=list)
    days: float | None = Field(None, gt=0, le=3660, allow_inf_nan=False)
    eligible: list[Literal["view", "search", "cart", "remove_from_cart", "fav",
                           "purchase"]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> LabelRule:
        if self.kind == "contains":
            if not self.types:
                raise ValueError("rule 'contains' needs `types` (e.g. [purchase])")
            if self.days is not None:
                raise ValueError("rule 'contains' takes no `days`")
        elif self.days is None:
            raise ValueError("rule 'comes_back' needs `days` (> 0)")
        return self

    @property
    def needs_later(self) -> bool:
        """Whether labels depend on the user's later sessions."""
        return self.kind == "comes_back"


class Target(BaseModel):
    """An outcome target: label rule, its two labels, their taxonomy and the prediction point.

    Example:
        >>> t = Target(name="t", taxonomy="purchase_intent", positive="will_buy",
        ...            negative="no_purchase", rule={"kind": "contains", "types": ["purchase"]},
        ...            input="before:cart,purchase")
        >>> t.input.kind, t.model_dump()["input"]
        ('before', 'before:cart,purchase')
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
    version: int = Field(1, ge=1)
    description: str = ""
    taxonomy: str = Field(min_length=1, description="The taxonomy whose labels these are: a "
                          "shipped name or a path (relative paths: to the target file).")
    positive: str = Field(min_length=1, description="The label of sessions the rule holds for.")
    negative: str = Field(min_length=1, description="The label of the others.")
    rule: LabelRule
    input: InputCut = Field(description="The default prediction point (`--input` overrides).")
    min_events: int = Field(1, ge=1, description="Sessions with fewer events before the "
                            "prediction point are left out: nothing to predict from.")
    path: str | None = Field(None, description="Where it was loaded from (not hashed).")

    @model_validator(mode="after")
    def _labels(self) -> Target:
        if self.positive == self.negative:
            raise ValueError("positive and negative must be different labels")
        return self

    def labels(self) -> tuple[str, str]:
        """``(positive, negative)``."""
        return self.positive, self.negative

    def with_input(self, spec: str | InputCut | None) -> Target:
        """This target with another prediction point (``None``: unchanged)."""
        if spec is None:
            return self
        return self.model_copy(update={"input": InputCut.parse(spec)})

    def taxonomy_ref(self) -> str:
        """What ``classify.taxonomy`` should be set to: the shipped name, or an absolute path
        (a relative one is resolved against the target file's folder)."""
        ref = self.taxonomy
        if ("/" in ref or "\\" in ref or ref.lower().endswith(_SUFFIXES)) and self.path:
            p = Path(ref).expanduser()
            if not p.is_absolute():
                p = Path(self.path).parent / p
            return str(p.resolve())
        return ref

    def load_taxonomy(self) -> Taxonomy:
        """The target's taxonomy, checked to hold exactly its two labels."""
        tax = load_taxonomy(self.taxonomy_ref())
        if set(tax.names) != {self.positive, self.negative}:
            raise ConfigError(
                f"target {self.name!r} labels {[self.positive, self.negative]} are not the "
                f"labels of its taxonomy {tax.name!r} {list(tax.names)}", file=self.path,
                field="taxonomy", value=self.taxonomy)
        return tax

    @property
    def content_hash(self) -> str:
        """sha256 (hex) of the canonical JSON of the target (its ``path`` aside): a fitted
        model records it, so an edited target is detected."""
        body = self.model_dump(mode="json", exclude={"path"})
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def cut(self, session: Session) -> Session:
        """``session`` as the model may see it (:class:`EmptyAfterCut` if too little is left)."""
        return self.input.cut(session, min_events=self.min_events)


def known_targets() -> list[str]:
    """Names of the shipped targets."""
    return sorted(p.stem for p in (prompts_dir() / "targets").glob("*.yaml"))


def _resolve(name_or_path: str | Path) -> Path:
    if isinstance(name_or_path, str):
        looks_like_path = ("/" in name_or_path or "\\" in name_or_path
                           or name_or_path.lower().endswith(_SUFFIXES))
        if not looks_like_path:
            path = prompts_dir() / "targets" / f"{name_or_path}.yaml"
            if not path.is_file():
                raise ConfigError(f"no shipped target called {name_or_path!r}",
                                  file=str(path), field="target", value=name_or_path,
                                  known=known_targets())
            return path
    path = Path(name_or_path).expanduser()
    if path.suffix.lower() not in _SUFFIXES:
        raise ConfigError("target file must end in .yaml, .yml or .json", file=str(path),
                          field="target")
    if not path.is_file():
        raise ConfigError("target file not found", file=str(path), field="target")
    return path


def load_target(name_or_path: str | Path | Target) -> Target:
    """A shipped target (``"purchase"``) or a .yaml/.yml/.json path, validated, with its
    taxonomy loaded and checked to hold its two labels. Every problem is a
    :class:`ConfigError` naming the file and field.

    Example:
        >>> load_target("return_visit").rule.days
        7.0
    """
    if isinstance(name_or_path, Target):
        return name_or_path
    path = _resolve(name_or_path)
    data = read_mapping(path, ConfigError, "target file", "name, taxonomy, rule, ...")
    try:
        target = Target.model_validate({**data, "path": str(path.resolve())})
    except ConfigError as e:  # a bad `input:` spec
        raise ConfigError(e.message, file=str(path), field="input",
                          value=e.context.get("value")) from e
    except ValidationError as e:
        errors = [{"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
                  for err in e.errors()]
        value = e.errors()[0].get("input")
        shown = value if isinstance(value, (str, int, float, bool)) else None
        raise ConfigError(errors[0]["message"], file=str(path),
                          field=errors[0]["field"] or None, value=shown, errors=errors) from e
    target.load_taxonomy()
    return target


def cut(session: Session, spec: Target | InputCut | str) -> Session:
    """``session`` as a model fitted for ``spec`` (a target, or an input cut) may see it;
    :class:`EmptyAfterCut` when nothing is left. What ``classify`` applies to new sessions."""
    if isinstance(spec, Target):
        return spec.cut(session)
    return InputCut.parse(spec).cut(session)

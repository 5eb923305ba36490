"""Label taxonomies: the named behaviour labels a session can get, with descriptions and signals.

A taxonomy is a small YAML (or JSON) file. The default, ``personas``, ships in
``prompts/taxonomies/personas.yaml``; users can point :func:`load_taxonomy` at their own file.

Example:
    >>> tax = load_taxonomy("personas")
    >>> tax.names[:2]
    ('focused_buyer', 'comparison_shopper')
    >>> tax.get("deal_hunter").description.startswith("Driven by price")
    True
    >>> len(tax.content_hash)
    64
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from behavior_rag.errors import BehaviorRagError, TaxonomyError
from behavior_rag.predicates import Predicate, parse_predicate
from behavior_rag.resources import prompts_dir
from behavior_rag.types import SessionFacts

_SUFFIXES = (".yaml", ".yml", ".json")
PredicateText = Annotated[str, AfterValidator(lambda t: str(parse_predicate(t)))]


class Label(BaseModel):
    """One label: a snake_case name, a description a model can read, and typical signals.

    Example:
        >>> Label(name="deal_hunter", description="Driven by price.", signals=["sale queries"]).name
        'deal_hunter'
    """

    # Unknown keys are rejected so a typo ("signal:") fails loudly instead of being dropped.
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$",
                      description="snake_case, e.g. 'cart_abandoner'.")
    description: str = Field(min_length=1)
    summary: str = Field("", description="A few words a compact prompt shows instead of the "
                         "description and signals (``prompts/classify_compact.yaml``, the "
                         "fine-tune's prompt); empty: the description.")
    signals: list[str] = Field(default_factory=list,
                               description="Observable session facts typical of this label.")
    evidence_facts: list[str] = Field(
        default_factory=list, description="SessionFacts names that show this label; "
        "explanations cite them (each verified by code). Empty: a default set of key facts.")
    requires: list[PredicateText] = Field(
        default_factory=list, description="Facts every session of this label has, e.g. "
        "'n_cart >= 1' (checked by code: a prediction that breaks one is moved or abstains).")
    excludes: list[PredicateText] = Field(
        default_factory=list, description="Facts no session of this label has, e.g. "
        "'n_purchase >= 1'.")

    @property
    def predicates(self) -> list[tuple[Predicate, bool]]:
        """``(predicate, must_hold)``: requires (True) then excludes (False)."""
        return ([(parse_predicate(t), True) for t in self.requires]
                + [(parse_predicate(t), False) for t in self.excludes])

    def violations(self, facts: SessionFacts) -> list[str]:
        """Why ``facts`` break this label's definition (empty: they do not), e.g.
        ``["requires n_cart >= 1, but n_cart = 0"]``. A fact without a value breaks nothing."""
        out = []
        for pred, must in self.predicates:
            held = pred.holds(facts)
            if held is not None and held != must:
                out.append(f"{'requires' if must else 'excludes'} {pred}, but {pred.shown(facts)}")
        return out


class Taxonomy(BaseModel):
    """A named, versioned set of labels with unique names.

    Example:
        >>> t = Taxonomy(name="tiny", labels=[{"name": "buyer", "description": "Buys."}])
        >>> t.names, "buyer" in t
        (('buyer',), True)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    version: int = Field(1, ge=1)
    description: str = ""
    labels: list[Label] = Field(min_length=1)
    metric: Literal["log_loss", "aupr", "auroc"] = Field(
        "log_loss", description="What fitting optimises (the stack's choice of heads): "
        "log-loss, or for two-label taxonomies the auPR / auROC of `positive`.")
    positive: str | None = Field(None, description="The label auPR / auROC are about.")

    @model_validator(mode="after")
    def _metric(self) -> Taxonomy:
        if self.metric != "log_loss" and self.positive is None:
            raise ValueError(f"metric {self.metric!r} needs `positive` (one of the labels)")
        if self.positive is not None and self.positive not in self.names:
            raise ValueError(f"positive {self.positive!r} is not one of the labels")
        return self

    @field_validator("labels")
    @classmethod
    def _unique(cls, labels: list[Label]) -> list[Label]:
        seen: set[str] = set()
        for label in labels:
            if label.name in seen:
                raise ValueError(f"duplicate label name {label.name!r}")
            seen.add(label.name)
        return labels

    @property
    def names(self) -> tuple[str, ...]:
        """Label names in file order."""
        return tuple(label.name for label in self.labels)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def get(self, name: str) -> Label:
        """The label called ``name``; :class:`TaxonomyError` if the taxonomy has none."""
        for label in self.labels:
            if label.name == name:
                return label
        raise TaxonomyError(f"unknown label {name!r} in taxonomy {self.name!r}",
                            field="label", value=name, known=list(self.names))

    @property
    def content_hash(self) -> str:
        """sha256 (hex) of the canonical JSON of the whole taxonomy.

        Fine-tuned adapters record this hash, so any edit (even to a description, which changes
        prompts) is detected when an adapter is loaded against a different taxonomy.
        """
        body = self.model_dump(mode="json")
        for key, default in (("metric", "log_loss"), ("positive", None)):
            if body[key] == default:  # unset: the hash of taxonomies from before these fields
                del body[key]
        for label in body["labels"]:
            for key in ("requires", "excludes"):
                if not label[key]:
                    del label[key]
        canonical = json.dumps(body, sort_keys=True,
                               separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _resolve(name_or_path: str | Path) -> Path:
    """A bare name means a shipped taxonomy; anything path-like is taken as a path."""
    if isinstance(name_or_path, str):
        looks_like_path = ("/" in name_or_path or "\\" in name_or_path
                           or name_or_path.lower().endswith(_SUFFIXES))
        if not looks_like_path:
            path = prompts_dir() / "taxonomies" / f"{name_or_path}.yaml"
            if not path.is_file():
                known = sorted(p.stem for p in (prompts_dir() / "taxonomies").glob("*.yaml"))
                raise TaxonomyError(f"no shipped taxonomy called {name_or_path!r}",
                                    file=str(path), value=name_or_path, known=known)
            return path
    path = Path(name_or_path).expanduser()
    if path.suffix.lower() not in _SUFFIXES:
        raise TaxonomyError("taxonomy file must end in .yaml, .yml or .json", file=str(path))
    if not path.is_file():
        raise TaxonomyError("taxonomy file not found", file=str(path))
    return path


def _loc(loc: tuple[Any, ...]) -> str:
    # Dotted loc as pydantic reports it, e.g. "labels.2.description"; empty means the whole file.
    return ".".join(str(part) for part in loc)


def read_mapping(path: Path, error: type[BehaviorRagError], what: str, keys: str) -> dict:
    """A YAML (or ``.json``) file that must hold a mapping; ``error`` names the file otherwise
    (taxonomies and outcome targets are read this way)."""
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise error(f"cannot parse {what}: {e}", file=str(path)) from e
    if not isinstance(data, dict):
        raise error(f"{what} must hold a mapping with {keys}", file=str(path),
                    value=type(data).__name__)
    return data


def load_taxonomy(name_or_path: str | Path = "personas") -> Taxonomy:
    """Load and validate a taxonomy: a shipped name (``"personas"``) or a .yaml/.yml/.json path.

    Every problem (missing file, bad YAML/JSON, invalid or duplicate label) raises
    :class:`TaxonomyError` with ``file`` and, for validation problems, the offending ``field``
    (e.g. ``labels.1.description``).

    Example:
        >>> load_taxonomy().name
        'shopper-personas'
    """
    path = _resolve(name_or_path)
    data = read_mapping(path, TaxonomyError, "taxonomy file", "name, labels, ...")
    try:
        return Taxonomy.model_validate(data)
    except ValidationError as e:
        errors = [{"field": _loc(err["loc"]), "message": err["msg"]} for err in e.errors()]
        first = errors[0]
        value = e.errors()[0].get("input")
        # Only echo scalar inputs; a whole label dict would drown the message.
        shown = value if isinstance(value, (str, int, float, bool)) else None
        raise TaxonomyError(first["message"], file=str(path), field=first["field"] or None,
                            value=shown, errors=errors) from e

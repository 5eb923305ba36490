"""Label definitions checked by code: small predicates over a session's facts.

A taxonomy label may say what every session of it has (``requires``) and what none has
(``excludes``), written as ``<fact> <op> <value>``: ``n_cart >= 1``, ``cart_abandoned == true``,
``carted_not_purchased == 0``, or another fact on the right (``n_purchase < n_cart``). Facts
are the scalar :class:`~behavior_rag.types.SessionFacts` names; an unknown name, an operator
other than ``>= <= > < == !=`` or a list-valued fact is refused when the taxonomy loads.

Example:
    >>> from behavior_rag.facts import compute_facts
    >>> from behavior_rag.synth import generate
    >>> f = compute_facts(generate(1, seed=0).sessions[0])
    >>> p = parse_predicate("n_events>=1")
    >>> str(p), p.holds(f)
    ('n_events >= 1', True)
    >>> parse_predicate("n_carts >= 1")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown fact 'n_carts' (known: cart_abandoned, carted_items, ...)
"""

from __future__ import annotations

import operator
import re
import typing
from functools import cache, lru_cache

from pydantic import BaseModel

from behavior_rag.types import Fact, SessionFacts

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
       "==": operator.eq, "!=": operator.ne}
_FORM = re.compile(r"^\s*([A-Za-z_]\w*)\s*(>=|<=|==|!=|>|<)\s*(\S+)\s*$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


@cache
def scalar_facts() -> tuple[str, ...]:
    """The fact names a predicate may use (sorted): SessionFacts' non-list facts."""
    out = []
    for name, field in SessionFacts.model_fields.items():
        origin = typing.get_origin(field.annotation) or field.annotation
        if isinstance(origin, type) and issubclass(origin, Fact):
            inner = field.annotation.model_fields["value"].annotation
            if typing.get_origin(inner) is not list:
                out.append(name)
    return tuple(sorted(out))


class Predicate(BaseModel):
    """``fact op value``; ``value`` is a number, a boolean or another fact's name."""

    fact: str
    op: str
    value: float | bool | str

    def __str__(self) -> str:
        v = self.value
        shown = str(v).lower() if isinstance(v, bool) else (
            f"{v:g}" if isinstance(v, float) else v)
        return f"{self.fact} {self.op} {shown}"

    def _rhs(self, facts: SessionFacts):
        return facts.get(self.value).value if isinstance(self.value, str) else self.value

    def holds(self, facts: SessionFacts) -> bool | None:
        """True / False; None when a side has no value (e.g. no prices in the session)."""
        left, right = facts.get(self.fact).value, self._rhs(facts)
        if left is None or right is None:
            return None
        return bool(OPS[self.op](left, right))

    def shown(self, facts: SessionFacts) -> str:
        """The facts as they are, e.g. ``n_cart = 0``."""
        out = f"{self.fact} = {_fmt(facts.get(self.fact).value)}"
        if isinstance(self.value, str):
            out += f", {self.value} = {_fmt(facts.get(self.value).value)}"
        return out


def _fmt(v) -> str:
    return str(v).lower() if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v)


def _known(name: str) -> str:
    if name not in scalar_facts():
        raise ValueError(f"unknown fact {name!r} (known: {', '.join(scalar_facts())})")
    return name


@lru_cache(maxsize=4096)
def parse_predicate(text: str) -> Predicate:
    """``"n_cart >= 1"`` -> :class:`Predicate`; ValueError saying what is wrong."""
    m = _FORM.match(text or "")
    if not m:
        raise ValueError(f"predicate {text!r} is not '<fact> <op> <value>' with op one of "
                         f"{' '.join(OPS)}")
    fact, op, raw = m.groups()
    _known(fact)
    if raw.lower() in ("true", "false"):
        value: float | bool | str = raw.lower() == "true"
    elif _NUMBER.match(raw):
        value = float(raw)
    else:
        value = _known(raw)
    return Predicate(fact=fact, op=op, value=value)

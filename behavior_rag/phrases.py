"""How facts read: grammatical phrases and the explanation sentence, from ``prompts/explain.yaml``.

The phrase table is a template file, so wording (and a shop's language) changes without code;
the helpers it may use get counts and units right (``count``, ``duration``, ``num``).

Example:
    >>> fact_phrase("n_purchase", 1), fact_phrase("n_purchase", 0), fact_phrase("n_search", 3)
    ('1 purchase', 'no purchase', '3 searches')
    >>> fact_phrase("duration_s", 45.0), fact_phrase("duration_s", 200.0)
    ('session lasted 45 s', 'session lasted 3.3 min')
    >>> fact_phrase("PageValues", 0.0)
    'PageValues is 0'
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import yaml
from jinja2 import Environment, StrictUndefined

from behavior_rag.resources import prompts_dir


def num(x: Any) -> str:
    """3 -> '3', 3.0 -> '3', 3.256 -> '3.26', True -> 'true'."""
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, float):
        return f"{x:.0f}" if x.is_integer() else f"{x:.2f}".rstrip("0").rstrip(".")
    return str(x)


def count(n: Any, one: str, many: str) -> str:
    """'no search' / '1 search' / '3 searches' (non-integers keep their decimals)."""
    n_ = float(n)
    if n_ == 0:
        return f"no {one}"
    return f"{num(n)} {one if n_ == 1 else many}"


def duration(seconds: Any) -> str:
    """Seconds as a reader says them: '45 s', '3.2 min', '1.5 h'."""
    s = float(seconds)
    if s < 90:
        return f"{num(round(s))} s"
    if s < 5400:
        return f"{num(round(s / 60, 1))} min"
    return f"{num(round(s / 3600, 1))} h"


_ENV = Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
_ENV.globals.update(count=count, duration=duration, num=num)


@lru_cache(maxsize=1)
def table() -> dict[str, Any]:
    return yaml.safe_load((prompts_dir() / "explain.yaml").read_text(encoding="utf-8"))


@lru_cache(maxsize=256)
def _template(source: str):
    # compiling a template costs ~100x rendering it; the phrase table is small and fixed
    return _ENV.from_string(source)


def render_template(source: str, **values: Any) -> str:
    """A phrase template rendered with the grammar helpers (profiles use it for their claims).

    Example:
        >>> render_template("{{ count(value, 'session', 'sessions') }}", value=1)
        '1 session'
    """
    return _template(source).render(**values).strip()


def fact_phrase(name: str, value: Any) -> str:
    """How fact ``name`` with ``value`` reads ('<name> is <value>' without a table entry)."""
    src = table()["facts"].get(name)
    if src is None:
        return f"{name} is {num(value)}"
    return _template(src).render(value=value).strip()


def sentence(label: str, confidence: float, abstained: bool, phrases: Sequence[str],
             against: Sequence[str] = (), voters: int = 0, knn: int = 0,
             moved_from: str | None = None, reasons: Sequence[str] = (),
             threshold: float | None = None, eliminated: bool = False) -> str:
    """The explanation: label and confidence, then support, what argued against, the
    neighbours' agreement and, when the definition check moved the label, why.

    Example:
        >>> sentence("window_shopper", 0.8, False, ["nothing carted"], ["1 search"], 3, 5)
        'window_shopper (80% confident): nothing carted. Against: 1 search. 3 of 5 nearest labelled sessions are window_shopper.'
        >>> sentence("will_buy", 0.12, False, ["2 views of one item"], threshold=0.07)
        'will_buy (12% likely; given from 7%): 2 views of one item.'
        >>> sentence("window_shopper", 0.3, False, ["nothing carted"], eliminated=True)
        "window_shopper (by elimination: the other labels' definitions do not hold; the model gave it 30%): nothing carted."
    """
    t = table()
    moved = _template(t["moved"]).render(original=moved_from, reasons=list(reasons)) \
        if moved_from else ""
    src = t["abstain_template"] if abstained else t["template"]
    return " ".join(_template(src).render(
        label=label, confidence=confidence, phrases=list(phrases), against=list(against),
        voters=voters, knn=knn, moved=moved, threshold=threshold,
        eliminated=eliminated).split())

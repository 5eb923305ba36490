"""User profiles: facts over all of a user's sessions, computed by code, and a narrative whose
every claim cites one of those facts (and the sessions it rests on) and is checked.

Facts: recency / frequency / monetary, category and brand affinity, price band, time of day,
funnel conversion (view → cart → purchase) and, when predictions are given, the user's dominant
patterns. Sources without some signals say so in ``cannot_infer`` (CDNOW logs purchases only:
no views, carts, categories or brands; day resolution, so no time of day).

The narrative: an LLM that can generate JSON may propose claims (fact name + value + sentence),
asked a few facts at a time; each claim is kept only if the value equals the computed fact and
every number its sentence states is one the fact holds. Replies go through the one
structured-output helper (:func:`behavior_rag.llm.structured.ask`): a reply that is not JSON of
the asked shape is re-asked once with the validation error. What was dropped, and why, is listed
in ``llm_dropped``; the first batch in which nothing holds stops the asking (``llm_note`` says
so), so a model whose claims never verify costs one short call (two if it cannot write the
JSON), not minutes. Small local models
rarely manage this, so sentences for the facts the model did not cover come from
``prompts/profile.yaml`` (templates filled with the verified values) — the narrative never
states an unchecked number.

Example:
    >>> from behavior_rag.synth import generate
    >>> sessions = generate(40, seed=2).sessions
    >>> p = build_profile(sessions[0].user_id, sessions)
    >>> p.facts["n_sessions"].value >= 1 and all(c.verified for c in p.claims)
    True
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, time, timezone
from functools import lru_cache
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, Field

from behavior_rag.errors import BehaviorRagError, DataError, LLMOutputError
from behavior_rag.evidence import same_value
from behavior_rag.facts import compute_facts
from behavior_rag.ingest.pseudonym import is_anonymous
from behavior_rag.llm.base import ChatMessage, LLMBackend
from behavior_rag.llm.structured import ask
from behavior_rag.phrases import render_template
from behavior_rag.resources import prompts_dir
from behavior_rag.types import PatternPrediction, Session


class ProfileFact(BaseModel):
    """A value computed by code and the session ids it rests on."""

    value: Any
    sessions: list[str] = Field(default_factory=list)


class ProfileClaim(BaseModel):
    fact: str
    value: Any = None
    text: str
    sessions: list[str] = Field(default_factory=list)
    source: str = "template"  # "llm" when the model proposed it (and it verified)
    verified: bool = True


class DroppedClaim(BaseModel):
    """A claim the LLM proposed that did not verify, and why."""

    fact: str | None = None
    value: Any = None
    sentence: str = ""
    reason: str


class UserProfile(BaseModel):
    user_id: str
    facts: dict[str, ProfileFact]
    cannot_infer: list[str] = Field(default_factory=list)
    claims: list[ProfileClaim] = Field(default_factory=list)
    claims_dropped: int = 0
    llm_dropped: list[DroppedClaim] = Field(default_factory=list, description="What the LLM "
                                            "proposed that was dropped, with the reason.")
    llm_note: str | None = Field(None, description="Why the LLM was asked no further (or "
                                 "could not be asked), when it was.")
    narrative: str = ""
    session_ids: list[str] = Field(default_factory=list)
    as_of: datetime | None = Field(None, description="Recency is measured up to this time.")


@lru_cache(maxsize=1)
def _templates() -> dict:
    return yaml.safe_load((prompts_dir() / "profile.yaml").read_text())


def _share(counter: Counter, top: int = 3) -> list[list]:
    total = sum(counter.values()) or 1
    return [[k, round(v / total, 3)] for k, v in counter.most_common(top)]


def profile_facts(sessions: Sequence[Session], *, now: datetime | None = None,
                  predictions: Sequence[PatternPrediction] | None = None
                  ) -> tuple[dict[str, ProfileFact], list[str]]:
    """Facts over ``sessions`` (one user's) and the signals the data cannot show."""
    ss = sorted(sessions, key=lambda s: s.start or datetime.min.replace(tzinfo=timezone.utc))
    ids = [s.session_id for s in ss]
    ev = [(s.session_id, e) for s in ss for e in s.events]
    if not ev:
        raise DataError("a profile needs sessions with events", field="sessions")
    times = [e.timestamp for _, e in ev]
    now = now or max(times)
    types = Counter(e.type for _, e in ev)
    buys = [(sid, e) for sid, e in ev if e.type == "purchase"]
    spend = [e.price for _, e in buys if e.price is not None]
    f: dict[str, ProfileFact] = {
        "n_sessions": ProfileFact(value=len(ss), sessions=ids),
        "first_seen": ProfileFact(value=min(times).date().isoformat(), sessions=ids[:1]),
        "last_seen": ProfileFact(value=max(times).date().isoformat(), sessions=ids[-1:]),
        "recency_days": ProfileFact(value=(now - max(times)).days, sessions=ids[-1:]),
        "active_days": ProfileFact(value=len({t.date() for t in times}), sessions=ids),
        # "no purchase" rests on every session
        "n_purchases": ProfileFact(value=len(buys), sessions=sorted({s for s, _ in buys}) or ids),
    }
    span = max((max(times) - min(times)).days, 1)
    f["sessions_per_week"] = ProfileFact(value=round(len(ss) / span * 7, 2) if span > 1
                                         else float(len(ss)), sessions=ids)
    if spend:
        f["monetary_total"] = ProfileFact(value=round(float(sum(spend)), 2),
                                          sessions=sorted({s for s, _ in buys}))
        f["avg_order_value"] = ProfileFact(value=round(float(np.mean(spend)), 2),
                                           sessions=sorted({s for s, _ in buys}))
    cannot: list[str] = []
    browse = types.get("view", 0) + types.get("cart", 0) + types.get("fav", 0)
    if browse:
        f["n_views"] = ProfileFact(value=types.get("view", 0), sessions=ids)
        f["n_carts"] = ProfileFact(value=types.get("cart", 0), sessions=ids)
        view_s = {s for s, e in ev if e.type == "view"}
        cart_s = {s for s, e in ev if e.type == "cart"}
        buy_s = {s for s, _ in buys}
        # a rate rests on all the sessions in its denominator
        f["cart_rate"] = ProfileFact(value=round(len(cart_s) / max(len(view_s), 1), 3),
                                     sessions=sorted(view_s | cart_s))
        f["purchase_rate"] = ProfileFact(value=round(len(buy_s) / len(ss), 3), sessions=ids)
    else:
        cannot.append("funnel (views, carts, conversion): only purchases are logged")
    for field_name, fact in (("category", "top_categories"), ("brand", "top_brands")):
        c = Counter(getattr(e, field_name) for _, e in ev if getattr(e, field_name))
        if c:
            top = _share(c)
            f[fact] = ProfileFact(value=top, sessions=sorted(
                {s for s, e in ev if getattr(e, field_name) in {k for k, _ in top}}))
        else:
            cannot.append(f"{field_name} affinity: no {field_name} in the data")
    prices = [e.price for _, e in ev if e.price is not None]
    if prices:
        q = np.percentile(prices, [25, 50, 75])
        f["price_band"] = ProfileFact(value=[round(float(x), 2) for x in q],
                                      sessions=sorted({s for s, e in ev if e.price is not None}))
    else:
        cannot.append("price band: no prices in the data")
    # Sessions' own zone and resolution decide (a day-resolution date in UTC+8 is 16:00 UTC);
    # midnight-only times without a recorded resolution are dates too.
    timed = [s for s in ss if s.events and s.time_resolution != "day"
             and (s.time_resolution or any(e.timestamp.time() != time(0) for e in s.events))]
    if timed:
        parts = Counter(compute_facts(s).part_of_day.value for s in timed)
        f["part_of_day"] = ProfileFact(value=_share(parts, 4),
                                       sessions=sorted(s.session_id for s in timed))
    else:
        cannot.append("time of day: timestamps have day resolution")
    if predictions:
        f.update(_patterns(predictions, {s.session_id for s in ss}))
    return f, cannot


def _patterns(predictions: Sequence[PatternPrediction], mine: set[str]
              ) -> dict[str, ProfileFact]:
    """``dominant_patterns``: the user's most frequent predicted labels, each counted only
    where the prediction answered (not abstained) and carried evidence for it (verified support:
    the classifier's own checks), citing exactly those sessions."""
    backed = [p for p in predictions if p.session_id in mine and not p.abstained and p.evidence]
    labels = Counter(p.label for p in backed)
    if not labels:
        return {}
    top = labels.most_common(3)
    keep = {k for k, _ in top}
    return {"dominant_patterns": ProfileFact(
        value=[[k, v] for k, v in top],
        sessions=[p.session_id for p in backed if p.label in keep])}


def _template_claims(facts: dict[str, ProfileFact], skip: set[str]) -> list[ProfileClaim]:
    out = []
    for name, tpl in _templates()["facts"].items():
        if name in facts and name not in skip:
            text = render_template(tpl, value=facts[name].value)
            out.append(ProfileClaim(fact=name, value=facts[name].value, text=text,
                                    sessions=facts[name].sessions[:10]))
    return out


class _LLMClaim(BaseModel):
    fact: str
    value: Any = None
    sentence: str


class _LLMClaims(BaseModel):
    claims: list[_LLMClaim] = Field(default_factory=list)


LLM_BATCH = 4  # facts per request: short replies, and a bad model is found out early
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _numbers_ok(sentence: str, value: Any) -> str | None:
    """None if every number ``sentence`` states is in ``value`` (a share may be a percentage),
    else the first number that is not."""
    held = {float(x) for x in _NUMBER.findall(json.dumps(value))}
    held |= {round(x * 100) for x in held if 0 <= x <= 1}
    for n in _NUMBER.findall(sentence):
        if float(n) not in held:
            return n
    return None


def _check(c: _LLMClaim, facts: dict[str, ProfileFact]) -> str | None:
    """Why claim ``c`` cannot be kept (None: it verifies)."""
    fact = facts.get(c.fact)
    if fact is None:
        return f"no fact named {c.fact!r}"
    if not same_value(c.value, fact.value):
        return f"value {json.dumps(c.value)} differs from the computed {json.dumps(fact.value)}"
    if not c.sentence.strip():
        return "empty sentence"
    bad = _numbers_ok(c.sentence, fact.value)
    if bad is not None:
        return f"the sentence states {bad}, which the fact {c.fact} does not hold"
    return None


def _ask(llm: LLMBackend, facts: dict[str, ProfileFact], names: list[str]) -> _LLMClaims:
    """The model's claims about facts ``names``, asked through the structured-output helper: a
    reply not of the asked shape is re-asked once with the validation error, then
    :class:`~behavior_rag.errors.LLMOutputError`."""
    tpl = _templates()
    data = {k: facts[k].value for k in names}
    msgs = [ChatMessage(role="system", content=tpl["system"]),
            ChatMessage(role="user", content=render_template(
                tpl["user"], facts_json=json.dumps(data, ensure_ascii=False)))]
    return ask(llm, msgs, _LLMClaims, max_tokens=60 * len(names) + 20,
               reask=lambda error: render_template(tpl["reask"], error=error))


def _llm_claims(llm: LLMBackend, facts: dict[str, ProfileFact]
                ) -> tuple[list[ProfileClaim], list[DroppedClaim], str | None]:
    """The LLM's claims that verify, those dropped (with reasons), and why it was not asked
    further (None: every batch was asked)."""
    order = [k for k in _templates()["facts"] if k in facts]
    batches = [order[i: i + LLM_BATCH] for i in range(0, len(order), LLM_BATCH)]
    kept: dict[str, ProfileClaim] = {}
    dropped: list[DroppedClaim] = []
    seen: set[str] = set()
    for i, names in enumerate(batches, 1):
        try:
            got = _ask(llm, facts, names)
        except LLMOutputError as e:
            dropped.append(DroppedClaim(sentence=e.context.get("raw_output", "")[:200],
                                        reason="the reply is not JSON of the asked shape"))
            return list(kept.values()), dropped, f"stopped after batch {i} of {len(batches)}: " \
                "the reply was not JSON of the asked shape"
        except BehaviorRagError as e:
            return list(kept.values()), dropped, f"the LLM could not be asked: {e.message}"
        new = 0
        for c in got.claims:
            if c.fact in kept:
                continue  # a repeat of a claim already kept
            reason = _check(c, facts)
            if reason is None:
                fact = facts[c.fact]
                kept[c.fact] = ProfileClaim(fact=c.fact, value=fact.value,
                                            text=c.sentence.strip()[:300],
                                            sessions=fact.sessions[:10], source="llm")
                new += 1
                continue
            key = json.dumps([c.fact, c.value, reason], default=str)
            if key not in seen:  # the same wrong claim again is listed once
                seen.add(key)
                dropped.append(DroppedClaim(fact=c.fact, value=c.value,
                                            sentence=c.sentence.strip()[:300], reason=reason))
        if not new and i < len(batches):
            return list(kept.values()), dropped, (
                f"stopped after batch {i} of {len(batches)}: "
                + ("it proposed no claim" if not got.claims else
                   "none of its claims verified") + "; templates word the other facts")
    return list(kept.values()), dropped, None


def user_sessions(user_id: str, sessions: Sequence[Session] | None, store
                  ) -> tuple[list[Session], datetime | None]:
    """``user_id``'s sessions and the profile's "now" (the last event seen): from ``sessions``
    when given, else from ``store`` (a :class:`~behavior_rag.ingest.store.SessionStore`).

    Example:
        >>> from behavior_rag.synth import generate
        >>> s = generate(3, seed=1).sessions
        >>> mine, now = user_sessions(s[0].user_id, s, store=None)
        >>> mine[0].user_id == s[0].user_id and now is not None
        True
    """
    if sessions is None:
        return store.of_user(user_id), store.last_event()
    every = [s.end for s in sessions if s.events]
    return [s for s in sessions if s.user_id == user_id], max(every) if every else None


def build_profile(user_id: str, sessions: Sequence[Session], *, llm: LLMBackend | None = None,
                  predictions: Sequence[PatternPrediction] | None = None,
                  now: datetime | None = None) -> UserProfile:
    """The profile of ``user_id`` from its sessions (others in ``sessions`` are ignored)."""
    mine = [s for s in sessions if s.user_id == user_id]
    if not mine:
        raise DataError(f"no sessions for user {user_id!r}", field="user_id", value=user_id)
    now = now or max(e.timestamp for s in mine for e in s.events) if any(
        s.events for s in mine) else now
    facts, cannot = profile_facts(mine, now=now, predictions=predictions)
    if is_anonymous(user_id):
        cannot.insert(0, "the shopper across sessions: users are unknown for this source (no "
                      "user ids; this profile is one session's anonymous user)")
    claims, dropped, note = _llm_claims(llm, facts) if llm is not None and hasattr(
        llm, "generate") else ([], [], None)
    # The model's wording for facts it got right; templates for every fact it did not cover.
    claims += _template_claims(facts, {c.fact for c in claims})
    order = list(_templates()["facts"])
    claims.sort(key=lambda c: order.index(c.fact) if c.fact in order else len(order))
    narrative = " ".join(c.text[:1].upper() + c.text[1:].rstrip(".") + "." for c in claims)
    if cannot:
        narrative += " Not inferable from this data: " + "; ".join(cannot) + "."
    return UserProfile(user_id=user_id, facts=facts, cannot_infer=cannot, claims=claims,
                       claims_dropped=len(dropped), llm_dropped=dropped, llm_note=note,
                       narrative=narrative,
                       session_ids=[s.session_id for s in mine], as_of=now)


def verify_profile(profile: UserProfile, sessions: Sequence[Session]) -> list[str]:
    """Problems found when re-checking every claim against freshly computed facts ([] = ok)."""
    facts, _ = profile_facts([s for s in sessions if s.user_id == profile.user_id],
                             now=profile.as_of)
    problems = []
    for c in profile.claims:
        fact = facts.get(c.fact)
        if fact is None:
            problems.append(f"{c.fact}: no such fact")
        elif not same_value(c.value, fact.value):
            problems.append(f"{c.fact}: claimed {c.value!r}, computed {fact.value!r}")
        elif not set(c.sessions) <= set(fact.sessions):
            problems.append(f"{c.fact}: cites sessions the fact does not rest on")
    return problems


def profile_text(profile: UserProfile) -> str:
    """Text to embed for "shoppers like this user": the narrative's facts, compactly."""
    return "; ".join(f"{k} {json.dumps(v.value, ensure_ascii=False)}"
                     for k, v in profile.facts.items())


def similar_profiles(query: UserProfile, others: Sequence[UserProfile], embedder, k: int = 5
                     ) -> list[tuple[str, float]]:
    """Users whose profile text is closest to ``query``'s: (user_id, cosine), best first."""
    pool = [p for p in others if p.user_id != query.user_id]
    if not pool:
        return []
    vecs = embedder.embed([profile_text(query)] + [profile_text(p) for p in pool])
    sims = vecs[1:] @ vecs[0]
    order = np.argsort(-sims)[:k]
    return [(pool[i].user_id, float(sims[i])) for i in order]

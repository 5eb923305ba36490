"""vLLM (OpenAI-compatible server) backend: what production uses.

* ``generate``: ``/v1/chat/completions``, with ``response_format`` ``json_schema`` when a schema
  is given (vLLM's structured outputs enforce it).
* ``score_options``: the chat template is applied by the server (``/tokenize`` with the answer
  left open as an assistant message; how each option tokenises after it is learnt once and
  cached), then the options' tokens are scored as next tokens (``logprob_token_ids``) from a
  trie of contexts, two ``/v1/completions`` requests per session, so vLLM's prefix cache serves
  the long static prefix and the session's own prompt once. Servers without
  ``logprob_token_ids`` get one ``prompt_logprobs`` request instead (same numbers, but vLLM
  reads no prefix cache for it).
* Retries with exponential backoff on connection errors, 429 and 5xx; a timeout per request; a
  bounded thread pool for concurrent requests (``map_concurrent``).

Example:
    >>> llm = VLLMBackend("http://127.0.0.1:8000/v1", model="smollm2")       # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx

from behavior_rag.errors import LLMError
from behavior_rag.llm.base import ChatMessage, LLMBackend

T = TypeVar("T")
R = TypeVar("R")
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class _Unsupported(Exception):
    """The server ignored ``logprob_token_ids`` (vLLM before it existed)."""


class VLLMBackend(LLMBackend):
    """Client of a vLLM OpenAI-compatible server. ``model`` may name a LoRA adapter."""

    concurrent = True  # a bounded thread pool of requests
    thread_safe = True  # httpx.Client is; the option cache only ever gains equal entries
    can_score = True

    def __init__(self, base_url: str = "http://127.0.0.1:8000/v1", *, model: str,
                 api_key: str | None = None, timeout_s: float = 60.0, max_retries: int = 3,
                 concurrency: int = 8, transport: httpx.BaseTransport | None = None,
                 next_token_scoring: bool = True) -> None:
        self.base_url = base_url.rstrip("/")
        self.root = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
        self.model = model
        self.name = f"vllm:{model}"
        self.max_retries = max_retries
        self.concurrency = concurrency
        self._option_cache: dict[tuple, tuple[int, list[int]]] = {}
        self._next_token_scoring = next_token_scoring
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(timeout=timeout_s, headers=headers, transport=transport,
                                  limits=httpx.Limits(max_connections=concurrency * 2))

    # ---- HTTP ---------------------------------------------------------------------------
    def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        delay = 0.5
        for attempt in range(1, self.max_retries + 2):
            try:
                r = self._http.post(url, json=body)
            except httpx.TransportError as e:
                err: Exception | str = e
            else:
                if r.status_code < 400:
                    return r.json()
                if r.status_code not in RETRY_STATUS:
                    raise LLMError(f"vLLM answered {r.status_code}: {r.text[:500]}", url=url,
                                   status=r.status_code, attempts=attempt)
                err = f"HTTP {r.status_code}"
            if attempt <= self.max_retries:
                time.sleep(delay)
                delay *= 2
        raise LLMError(f"vLLM unreachable or failing after {attempt} attempts: {err}", url=url,
                       attempts=attempt)

    def map_concurrent(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``fn`` over items with at most ``concurrency`` requests in flight; order kept."""
        if len(items) <= 1 or self.concurrency == 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(fn, items))

    # ---- LLMBackend ---------------------------------------------------------------------
    def _tokens(self, messages: list[dict[str, str]], open_answer: str | None) -> list[int]:
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if open_answer is None:
            body |= {"add_generation_prompt": True}
        else:
            body["messages"] = [*messages, {"role": "assistant", "content": open_answer}]
            body |= {"add_generation_prompt": False, "continue_final_message": True}
        return self._post(f"{self.root}/tokenize", body)["tokens"]

    def score_options(self, messages: list[ChatMessage], options: list[str], *,
                      answer_prefix: str = "") -> list[float]:
        msgs = [m.model_dump() for m in messages]
        # Trailing spaces belong to the option's first token (see LocalLLM.split_tokens).
        stripped = answer_prefix.rstrip(" ")
        moved = answer_prefix[len(stripped):]
        base = self._tokens(msgs, stripped) if stripped else self._tokens(msgs, None)
        prompts, starts = [], []
        for opt in options:
            # How an option tokenises after the prompt depends only on the prompt's last
            # token (a BPE merge never reaches further back across "Label:"), so the split
            # is cached by (last token, prefix, option): one /tokenize call per session
            # instead of one per label.
            key = (base[-1] if base else None, stripped, moved, opt)
            hit = self._option_cache.get(key)
            if hit is None:
                full = self._tokens(msgs, stripped + moved + opt) if stripped or moved else \
                    self._tokens(msgs, opt)
                common = 0
                for a, b in zip(base, full):
                    if a != b:
                        break
                    common += 1
                if common == len(full):
                    raise LLMError("option adds no tokens to the prompt", value=opt)
                hit = (len(base) - common, full[common:])
                if len(self._option_cache) < 10_000:
                    self._option_cache[key] = hit
            drop, tail = hit
            prompts.append(base[: len(base) - drop] + tail)
            starts.append(len(base) - drop)
        if self._next_token_scoring:
            try:
                return self._score_next_token(prompts, starts)
            except _Unsupported:
                # An older vLLM (no ``logprob_token_ids``): remember, and score the slow way.
                self._next_token_scoring = False
        return self._score_prompt_logprobs(prompts, starts)

    def _score_next_token(self, prompts: list[list[int]], starts: list[int]) -> list[float]:
        """Score every option token as a *next* token, so vLLM's prefix cache serves the prompt.

        ``prompt_logprobs`` would give the same numbers in one request, but vLLM skips reading
        the prefix cache for any request that asks for them, so each of the k options would
        recompute the whole ~1,000-token prompt. Here each distinct context (the prompt plus
        an option's first j tokens) is a prompt generating one token, with the full-vocabulary
        log-probabilities of the option tokens read through ``logprob_token_ids``. Contexts
        form a trie: the shared root is sent first, so the deeper ones hit its cached blocks.
        """
        targets: dict[tuple[int, ...], set[int]] = {}
        steps: list[list[tuple[tuple[int, ...], int]]] = []
        for prompt, start in zip(prompts, starts):
            row = []
            for pos in range(start, len(prompt)):
                ctx = tuple(prompt[:pos])
                targets.setdefault(ctx, set()).add(prompt[pos])
                row.append((ctx, prompt[pos]))
            steps.append(row)
        roots = {row[0][0] for row in steps}
        found: dict[tuple[int, ...], dict[str, float]] = {}
        for group in ([c for c in targets if c in roots], [c for c in targets if c not in roots]):
            if not group:
                continue
            ids = sorted(set().union(*(targets[c] for c in group)))
            out = self._post(f"{self.base_url}/completions", {
                "model": self.model, "prompt": [list(c) for c in group], "max_tokens": 1,
                "temperature": 0, "logprobs": 1, "logprob_token_ids": ids,
                "return_tokens_as_token_ids": True})
            for choice in out.get("choices", []):
                try:
                    found[group[choice["index"]]] = choice["logprobs"]["top_logprobs"][0]
                except (KeyError, IndexError, TypeError) as e:
                    raise _Unsupported from e
        scores = []
        for row in steps:
            total = 0.0
            for ctx, tok in row:
                lp = found.get(ctx, {}).get(f"token_id:{tok}")
                if lp is None:
                    raise _Unsupported
                total += float(lp)
            scores.append(total)
        return scores

    def _score_prompt_logprobs(self, prompts: list[list[int]], starts: list[int]) -> list[float]:
        """One request, ``prompt_logprobs``: works on any vLLM, but without prefix caching."""
        out = self._post(f"{self.base_url}/completions", {
            "model": self.model, "prompt": prompts, "max_tokens": 1, "temperature": 0,
            "prompt_logprobs": 0})
        scores = [0.0] * len(prompts)
        for choice in out["choices"]:
            i = choice["index"]
            lps = choice.get("prompt_logprobs") or []
            total = 0.0
            for pos in range(starts[i], len(prompts[i])):
                entry = lps[pos] or {}
                tok = entry.get(str(prompts[i][pos]))
                if tok is None:
                    raise LLMError("server returned no logprob for a prompt token; is "
                                   "prompt_logprobs supported?", position=pos)
                total += float(tok["logprob"])
            scores[i] = total
        return scores

    def generate(self, messages: list[ChatMessage], *, max_tokens: int = 256,
                 json_schema: dict | None = None) -> str:
        body: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens, "temperature": 0,
                                "messages": [m.model_dump() for m in messages]}
        if json_schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "answer", "schema": json_schema, "strict": True}}
        out = self._post(f"{self.base_url}/chat/completions", body)
        try:
            return out["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as e:
            raise LLMError("unexpected chat completion shape", raw_output=str(out)[:500]) from e

    def close(self) -> None:
        self._http.close()

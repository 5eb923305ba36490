"""LoRA fine-tune of the embedded LLM on labelled sessions: config, trainer, step, validation.

Example:
    >>> from behavior_rag.finetune import FinetuneConfig
    >>> FinetuneConfig().top_layers
    6
"""

from behavior_rag.finetune.config import FinetuneCard, FinetuneConfig, FinetuneResult
from behavior_rag.finetune.trainer import finetune, length_batches

__all__ = ["FinetuneCard", "FinetuneConfig", "FinetuneResult", "finetune", "length_batches"]

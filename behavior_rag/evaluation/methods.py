"""The method registry of ``behavior-rag eval``: which methods exist, which are baselines,
which are what users get (product), and how reports name them.

Example:
    >>> "stacked" in PRODUCT, PRETTY["gbm"]
    (True, 'gradient boosting (hand features)')
"""

from __future__ import annotations

BASELINES = ("majority", "bow", "gbm", "embed-lr")
PRODUCT = ("knn", "llm", "fused", "stacked", "lora")
METHODS = BASELINES + PRODUCT
DEFAULT_METHODS = [m for m in METHODS if m != "lora"]  # lora trains a model: opt in
PRETTY = {"majority": "majority class", "bow": "bag-of-words + LR (seed)",
          "gbm": "gradient boosting (hand features)", "embed-lr": "LR on embeddings",
          "knn": "kNN vote (product)", "llm": "few-shot LLM (product)",
          "fused": "fused LLM + kNN (product)",
          "stacked": "stacked kNN + GBM + embedding LR (product)",
          "lora": "LoRA fine-tuned LLM (product)"}

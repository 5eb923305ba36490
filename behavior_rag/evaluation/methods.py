"""The method registry of ``behavior-rag eval``: baselines, what users get (product), and the
product's components, with how reports name them.

Product and component rows all come from ``BehaviorRAG.fit`` / ``classify``
(:mod:`behavior_rag.evaluation.product`); baselines are separate models.

Example:
    >>> "cascade" in PRODUCT, PRETTY["gbm"]
    (True, 'gradient boosting (hand features)')
"""

from __future__ import annotations

BASELINES = ("majority", "bow", "gbm", "embed-lr")
# what users get: BehaviorRAG.classify with classify.llm = never / cascade / always
PRODUCT = ("product", "cascade", "always")
# read from the product's own predictions: each head, the LLM's label scores, a LoRA adapter's
HEAD_COMPONENTS = ("knn", "facts", "embed", "items")  # rows read from the fitted heads
COMPONENTS = (*HEAD_COMPONENTS, "llm", "lora")
METHODS = BASELINES + PRODUCT + COMPONENTS
NEEDS_FIT = ("product", "cascade", "always", *HEAD_COMPONENTS, "llm")
DEFAULT_METHODS = [m for m in METHODS if m != "lora"]  # lora trains a model: opt in
PRETTY = {"majority": "majority class", "bow": "bag-of-words + LR (seed)",
          "gbm": "gradient boosting (hand features)", "embed-lr": "LR on embeddings",
          "product": "heads + stack (product, classify.llm=never)",
          "cascade": "heads + stack, LLM where unsure (product default, classify.llm=cascade)",
          "always": "heads + stack + LLM on every session (product, classify.llm=always)",
          "knn": "kNN head (of the product)", "facts": "facts GBM head (of the product)",
          "embed": "embedding LR head (of the product)",
          "items": "items head: item/category vectors and label rates (of the product)",
          "llm": "few-shot LLM's own label scores (of the product)",
          "lora": "LoRA fine-tuned LLM's own label scores (of the product)"}

"""SYNTHETIC shopper sessions for the demo and the tests: a catalog, eight persona behaviour
models and a seeded generator (labels known by construction).

Example:
    >>> from behavior_rag.synth import PERSONAS, generate
    >>> len(PERSONAS), len(generate(8, seed=0).sessions)
    (8, 8)
"""

from behavior_rag.synth.catalog import Catalog, CatalogItem, CategoryInfo, make_catalog
from behavior_rag.synth.generate import SynthDataset, generate
from behavior_rag.synth.personas import PERSONAS

__all__ = ["PERSONAS", "Catalog", "CatalogItem", "CategoryInfo", "SynthDataset", "generate",
           "make_catalog"]

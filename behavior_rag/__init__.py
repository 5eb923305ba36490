"""behavior_rag: recognise and explain e-commerce shopper behaviour.

Example:
    >>> from behavior_rag import generate, render
    >>> print(render(generate(1, seed=0).sessions[0]).splitlines()[0][:6])
    facts:
"""

from behavior_rag.api import BehaviorRAG
from behavior_rag.client import AsyncClient, Client
from behavior_rag.errors import (
                                 BehaviorRagError,
                                 ConfigError,
                                 DataError,
                                 IngestError,
                                 RenderError,
                                 StoreError,
                                 TaxonomyError,
)
from behavior_rag.facts import compute_facts
from behavior_rag.frames import from_polars, to_pandas, to_polars
from behavior_rag.index.base import Filter, SessionMeta
from behavior_rag.ingest.load import load_events, load_records
from behavior_rag.ingest.models import ColumnMapping, FormatSpec, IngestReport, IngestResult
from behavior_rag.ingest.store import read_store, write_store
from behavior_rag.ingest.uci import load_uci
from behavior_rag.render import render
from behavior_rag.resources import __version__
from behavior_rag.retrieve import Neighbor
from behavior_rag.settings import Settings
from behavior_rag.synth import generate
from behavior_rag.taxonomy import Taxonomy, load_taxonomy
from behavior_rag.types import Event, Fact, Session, SessionFacts

__all__ = [
    "__version__",
    "AsyncClient", "BehaviorRAG", "Client", "Filter", "Neighbor", "SessionMeta", "BehaviorRagError", "ColumnMapping", "ConfigError", "DataError", "Event", "Fact", "FormatSpec",
    "IngestError", "IngestReport", "IngestResult", "RenderError", "Session", "SessionFacts",
    "Settings", "StoreError", "Taxonomy", "TaxonomyError", "compute_facts", "from_polars",
    "generate", "load_events", "load_records", "load_taxonomy", "load_uci", "read_store",
    "render", "to_pandas", "to_polars", "write_store",
]

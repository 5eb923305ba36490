"""The house rules, read from the package's own imports with ``ast`` (nothing is imported):
no import circles (imports inside functions count too: they must not hide one), no private
name imported from another package, and packages depend one way only, lower layers never on
higher ones (README "Architecture")."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "behavior_rag"

# Lowest first. A module may import from its own layer or below, never above.
LAYERS: list[set[str]] = [
    {"types", "errors", "settings", "resources", "atomic", "bounds", "faults", "plugins"},
    {"ingest", "facts", "history", "tokens", "guard", "predicates", "taxonomy", "synth",
     "fusion", "running_facts"},  # running_facts: the facts of a live session, per event
    {"render", "phrases", "evidence"},
    {"embed", "index", "vectors"},
    {"retrieve", "prompts"},
    {"llm"},
    {"heads", "labels"},  # labels: outcome targets, label files
    # frames: tables of their models; annotate: the labelling queue over classify/discover
    {"classify", "fitting", "profile", "discover", "frames", "annotate"},
    {"finetune"},
    # chains: LangChain adapters over api; live: open sessions scored through api
    {"api", "client", "wire", "batch", "chains", "live"},
    {"evaluation"},  # above the facade: its product rows call what users call (BehaviorRAG)
    {"service", "cli"},
    {"__init__"},  # the package's public face: `from behavior_rag import ...`
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, str, int]]:
    """(target module, imported name, line) for every import of our own code in ``path``."""
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "behavior_rag":
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((sub if sub in MODULES else base, a.name, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, "", node.lineno) for a in node.names
                    if a.name.split(".")[0] == "behavior_rag"]
    return out


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_package_has_a_layer():
    assert {_top(m) for m in MODULES} - set(RANK) == set()


def test_no_import_circles():
    edges = {m: {t for t, _, _ in imps if t in MODULES and t != m} for m, imps in GRAPH.items()}
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                circles.append(path[path.index(t):] + [t])
            elif t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            visit(m, [m])
    assert circles == []


def test_no_private_names_across_packages():
    bad = [f"{m}:{line} imports {name} from {t}" for m, imps in GRAPH.items()
           for t, name, line in imps
           if name.startswith("_") and not name.startswith("__") and _top(t) != _top(m)]
    assert bad == []


def test_dependencies_point_one_way():
    bad = [f"{m}:{line} ({_top(m)}, layer {RANK[_top(m)]}) imports {t} ({_top(t)}, layer "
           f"{RANK[_top(t)]})" for m, imps in GRAPH.items() for t, _, line in imps
           if RANK[_top(t)] > RANK[_top(m)]]
    assert bad == []


def test_a_shared_file_name_prefix_is_a_package():
    roots = [p.stem for p in PKG.glob("*.py") if not p.stem.startswith("_")]
    prefixes = Counter(r.split("_")[0] for r in roots)
    assert sorted(r for r in roots if prefixes[r.split("_")[0]] > 1) == []


def test_the_eval_harness_has_no_classifier_of_its_own():
    """Its product rows are BehaviorRAG.fit / classify: evaluation imports none of the parts a
    classifier is made of (it may read the feature code its baselines share, and the stack's
    summary type for the report)."""
    parts = ("classify", "fitting", "fusion", "retrieve", "index", "llm.local",
             "heads.model", "heads.gbm", "heads.linear", "heads.cascade", "heads.store")
    bad = [f"{m}:{line} imports {t}" for m, imps in GRAPH.items()
           if _top(m) == "evaluation" for t, name, line in imps
           if any(t == f"behavior_rag.{p}" or t.startswith(f"behavior_rag.{p}.") for p in parts)
           or (t == "behavior_rag.heads.stack" and name != "StackSummary")]
    assert bad == []
    product = [t for t, _, _ in GRAPH["behavior_rag.evaluation.product"]]
    assert "behavior_rag.api" in product


def test_heads_read_no_single_sources_module():
    """A source's columns reach the heads as its declared aggregates
    (``ingest.aggregates``), never by importing one dataset's adapter (e.g. ``ingest.uci``)."""
    # pseudonym: its split_keys (users keyed by their records, not by the installation's
    # pseudonym key) makes fit's cross-validation folds the same on every installation
    allowed = {"behavior_rag.ingest.aggregates", "behavior_rag.ingest.pseudonym"}
    bad = [f"{m}:{line} imports {t}" for m, imps in GRAPH.items() if _top(m) == "heads"
           for t, _, line in imps if _top(t) == "ingest" and t not in allowed]
    assert bad == []

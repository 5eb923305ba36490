"""The fitted classifier on disk: ``<index>/model/``, self-describing, checked on load, no pickle.

``manifest.json`` says what the model is (classes, taxonomy hash, embedder, each head by its
registered name with its parameters and files, the heads the stack chose, dev metrics,
thresholds, library versions, the sha256 of every file). Each head saves and loads itself
(:class:`~behavior_rag.heads.base.Head`); nothing is pickled. :func:`load_model` refuses a
model for another taxonomy or embedder, a head this version cannot load, or any file that is
missing or whose checksum does not match, naming the file and field. Format-1 folders (three
fixed heads) are read through :mod:`.legacy`.

Example:
    >>> save_model(fitted, "indexes/shop/model")                           # doctest: +SKIP
    >>> load_model("indexes/shop/model", taxonomy=tax, embedder=emb.info)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from behavior_rag.atomic import replace_dir
from behavior_rag.embed.base import EmbedderInfo
from behavior_rag.errors import BehaviorRagError, ConfigError, StoreError
from behavior_rag.heads.cascade import CascadeParams
from behavior_rag.heads.domain import DomainCheck
from behavior_rag.heads.linear import load_linear, save_linear
from behavior_rag.heads.model import FitStats, HeadsModel
from behavior_rag.heads.registry import head_class
from behavior_rag.heads.stack import Stack
from behavior_rag.history import Propensity
from behavior_rag.labels.targets import Target
from behavior_rag.taxonomy import Taxonomy, load_taxonomy

FORMAT_VERSION = 2  # 1: three fixed heads (read by legacy.py)
MANIFEST = "manifest.json"
PROPENSITY = "propensity.json"  # only with history features
STACK = "stack"  # stack_coef.npy, stack_intercept.npy


class HeadRecord(BaseModel):
    """One fitted head in the manifest: its registered name's parameters and files."""

    params: dict[str, Any] = Field(default_factory=dict)
    files: list[str] = Field(default_factory=list)


class ModelManifest(BaseModel):
    """``manifest.json`` of a fitted model folder."""

    format_version: int = FORMAT_VERSION
    created: datetime
    classes: list[str]
    taxonomy: str
    taxonomy_hash: str
    taxonomy_spec: Taxonomy | None = Field(None, description="The taxonomy itself (labels, "
                                           "definitions): the model describes what it labels.")
    embedder: EmbedderInfo
    heads: dict[str, HeadRecord] = Field(description="Every head fitted, by registered name.")
    chosen: list[str] = Field(description="The heads the stack combines (chosen by CV).")
    metric: str
    positive: str | None = None
    cv_loss: dict[str, float] = Field(default_factory=dict)
    history: bool = Field(False, description="Facts include the users' earlier sessions.")
    abstain_below: float
    threshold: float | None = Field(None, description="Decision threshold of the positive "
                                    "label (two labels); None: the most probable label.")
    cascade: CascadeParams = Field(default_factory=CascadeParams)
    target: Target | None = Field(None, description="The outcome target the labels came from; "
                                  "classify shows new sessions only what its input cut allows.")
    domain: DomainCheck | None = Field(None, description="The training sessions' fact ranges "
                                       "(out-of-domain check); None: older model, unchecked.")
    data_hash: str
    dev: FitStats
    versions: dict[str, str]
    files: dict[str, str] = Field(description="File name -> sha256.")


class FittedModel(BaseModel):
    """What :func:`behavior_rag.fitting.fit_model` produces and the classifier runs; not
    changed once made (fitting again makes a new one)."""

    model_config = {"arbitrary_types_allowed": True, "frozen": True}

    heads: HeadsModel
    cascade: CascadeParams = Field(default_factory=CascadeParams)
    target: Target | None = None  # classify applies its input cut
    taxonomy: Taxonomy
    embedder: EmbedderInfo
    data_hash: str
    dev: FitStats


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("behavior_rag", "lightgbm", "scikit-learn", "numpy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_model(m: FittedModel, path: str | Path) -> ModelManifest:
    """Write the model folder atomically (the previous model stays until the rename)."""
    h = m.heads
    with replace_dir(Path(path)) as tmp:
        records = {name: HeadRecord(params=head.params(), files=head.save(tmp))
                   for name, head in h.heads.items()}
        files = save_linear(h.stack.model, tmp, STACK)
        if h.propensity is not None:
            (tmp / PROPENSITY).write_text(h.propensity.model_dump_json())
            files.append(PROPENSITY)
        files += [f for r in records.values() for f in r.files]
        manifest = ModelManifest(
            created=datetime.now(timezone.utc), classes=h.classes, taxonomy=m.taxonomy.name,
            taxonomy_hash=m.taxonomy.content_hash, taxonomy_spec=m.taxonomy, embedder=m.embedder,
            heads=records,
            chosen=h.stack.chosen, metric=h.stack.metric, positive=h.stack.positive,
            cv_loss=h.stack.cv_loss, history=h.history, abstain_below=h.abstain_below,
            threshold=h.threshold, cascade=m.cascade, domain=h.domain, data_hash=m.data_hash,
            target=m.target.model_copy(update={"path": None}) if m.target else None,
            dev=m.dev,
            versions=_versions(), files={f: _sha(tmp / f) for f in files})
        (tmp / MANIFEST).write_text(manifest.model_dump_json(indent=1))
    return manifest


def read_manifest(path: str | Path) -> ModelManifest:
    from behavior_rag.heads.legacy import upgrade_manifest

    file = Path(path) / MANIFEST
    try:
        return ModelManifest.model_validate(upgrade_manifest(json.loads(file.read_text())))
    except FileNotFoundError as e:
        raise StoreError("no fitted model here (no manifest.json): run `behavior-rag fit`",
                         file=str(file)) from e
    except (ValidationError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise StoreError(f"invalid model manifest: {e}", file=str(file)) from e


def _check(man: ModelManifest, root: Path, taxonomy: Taxonomy, embedder: EmbedderInfo) -> None:
    if man.format_version != FORMAT_VERSION:
        raise StoreError(f"model format {man.format_version} is not supported (expected "
                         f"{FORMAT_VERSION})", file=str(root / MANIFEST), field="format_version")
    if man.taxonomy_hash != taxonomy.content_hash:
        raise ConfigError(f"the model was fitted for taxonomy {man.taxonomy!r} (hash "
                          f"{man.taxonomy_hash}), the configured one is {taxonomy.name!r} (hash "
                          f"{taxonomy.content_hash}): refit", file=str(root / MANIFEST),
                          field="taxonomy_hash")
    if (man.embedder.id, man.embedder.dim) != (embedder.id, embedder.dim):
        raise ConfigError(f"the model was fitted on {man.embedder.id} vectors (dim "
                          f"{man.embedder.dim}), the index uses {embedder.id} (dim "
                          f"{embedder.dim}): refit", file=str(root / MANIFEST), field="embedder")
    if not set(man.chosen) <= set(man.heads) or not man.chosen:
        raise StoreError(f"the stack chose heads {man.chosen} not among those fitted "
                         f"{sorted(man.heads)}", file=str(root / MANIFEST), field="chosen")
    # the files every head and the stack need, whatever `files` happens to list
    needed = {f"{STACK}_coef.npy", f"{STACK}_intercept.npy",
              *(f for r in man.heads.values() for f in r.files), *man.files}
    for name in sorted(needed):
        f = root / name
        if Path(name).name != name or not f.is_file() or f.is_symlink() \
                or _sha(f) != man.files.get(name):
            raise StoreError("model file is missing or does not match its checksum in the "
                             "manifest (tampered or half-copied)", file=str(f), field="files")


def _load_head(root: Path, name: str, rec: HeadRecord, classes: list[str]):
    try:
        return head_class(name).load(root, classes, rec.params)
    except BehaviorRagError as e:
        raise StoreError(f"cannot load head {name!r}: {e.message}", file=str(root / MANIFEST),
                         field=f"heads.{name}") from e
    except (ValidationError, ValueError, KeyError, TypeError, OSError) as e:
        raise StoreError(f"cannot load head {name!r}: {e}", file=str(root / MANIFEST),
                         field=f"heads.{name}") from e


def load_model(path: str | Path, *, taxonomy: Taxonomy, embedder: EmbedderInfo) -> FittedModel:
    """The model at ``path``, checked against the taxonomy and embedder in use."""
    root = Path(path)
    man = read_manifest(root)
    _check(man, root, taxonomy, embedder)
    stack = Stack(man.classes, man.metric, man.positive)
    stack.chosen, stack.cv_loss = list(man.chosen), dict(man.cv_loss)
    stack.model = load_linear(root, STACK, man.classes)
    prop = None
    if PROPENSITY in man.files:
        try:
            prop = Propensity.model_validate_json((root / PROPENSITY).read_text())
        except (ValidationError, ValueError) as e:
            raise StoreError(f"invalid propensity table: {e}", file=str(root / PROPENSITY)) \
                from e
    heads = HeadsModel(man.classes, {n: _load_head(root, n, r, man.classes)
                                     for n, r in man.heads.items()}, stack,
                       abstain_below=man.abstain_below, propensity=prop,
                       threshold=man.threshold, history=man.history, domain=man.domain)
    return FittedModel(heads=heads, cascade=man.cascade, target=man.target, taxonomy=taxonomy,
                       embedder=man.embedder, data_hash=man.data_hash, dev=man.dev)


def model_taxonomy(path: Path | None, name: str, *, configured: bool) -> Taxonomy:
    """The taxonomy to classify with: ``name``'s, unless it was left at its default
    (``configured`` False) and a model fitted with another one is at ``path``: then that one
    (as an index keeps the embedder it was built with)."""
    tax = load_taxonomy(name)
    if configured or path is None or not (path / "manifest.json").exists():
        return tax
    fitted = read_manifest(path).taxonomy_spec
    return fitted if fitted is not None and fitted.content_hash != tax.content_hash else tax

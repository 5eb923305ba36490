"""The fitted classifier on disk: ``<index>/model/``, self-describing, checked on load, no pickle.

``manifest.json`` says what the model is (classes, taxonomy hash, embedder, feature names in
order, heads and the ones the stack chose, dev metrics, thresholds, library versions, the
sha256 of every file); the facts head is LightGBM's text format, linear models are ``.npy``
arrays read with ``allow_pickle=False``. :func:`load_model` refuses a model for another
taxonomy or embedder, a feature set this version computes differently, or any file whose
checksum does not match, naming the file and field.

Example:
    >>> save_model(fitted, "indexes/shop/model")                           # doctest: +SKIP
    >>> load_model("indexes/shop/model", taxonomy=tax, embedder=emb.info)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from behavior_rag.atomic import replace_dir
from behavior_rag.embed.base import EmbedderInfo
from behavior_rag.errors import ConfigError, StoreError
from behavior_rag.fusion import FusionParams
from behavior_rag.heads.cascade import CascadeParams
from behavior_rag.heads.features import FACT_FEATURES, FeatureSpec
from behavior_rag.heads.gbm import FactsHead, GBMParams
from behavior_rag.heads.linear import LinearHead
from behavior_rag.heads.model import HEADS, FitStats, HeadsModel
from behavior_rag.heads.stack import Stack
from behavior_rag.history import Propensity
from behavior_rag.taxonomy import Taxonomy

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PROPENSITY = "propensity.json"  # only with history features
FILES = ("facts_gbm.txt", "embed_coef.npy", "embed_intercept.npy", "stack_coef.npy",
         "stack_intercept.npy")


class ModelManifest(BaseModel):
    """``manifest.json`` of a fitted model folder."""

    format_version: int = FORMAT_VERSION
    created: datetime
    classes: list[str]
    taxonomy: str
    taxonomy_hash: str
    embedder: EmbedderInfo
    features: FeatureSpec
    feature_names: list[str]
    heads: list[str] = Field(description="Every head fitted.")
    chosen: list[str] = Field(description="The heads the stack combines (chosen by CV).")
    metric: str
    positive: str | None = None
    cv_loss: dict[str, float] = Field(default_factory=dict)
    gbm: GBMParams
    knn: FusionParams
    abstain_below: float
    threshold: float | None = Field(None, description="Decision threshold of the positive "
                                    "label (two labels); None: the most probable label.")
    cascade: CascadeParams = Field(default_factory=CascadeParams)
    data_hash: str
    dev: FitStats
    versions: dict[str, str]
    files: dict[str, str] = Field(description="File name -> sha256.")


class FittedModel(BaseModel):
    """What :func:`behavior_rag.fitting.fit_model` produces and the classifier runs."""

    model_config = {"arbitrary_types_allowed": True}

    heads: HeadsModel
    cascade: CascadeParams = Field(default_factory=CascadeParams)
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
        (tmp / "facts_gbm.txt").write_text(h.facts.to_text())
        for name, lin in (("embed", h.embed), ("stack", h.stack.model)):
            np.save(tmp / f"{name}_coef.npy", lin.coef, allow_pickle=False)
            np.save(tmp / f"{name}_intercept.npy", lin.intercept, allow_pickle=False)
        files = list(FILES)
        if h.propensity is not None:
            (tmp / PROPENSITY).write_text(h.propensity.model_dump_json())
            files.append(PROPENSITY)
        manifest = ModelManifest(
            created=datetime.now(timezone.utc), classes=h.classes, taxonomy=m.taxonomy.name,
            taxonomy_hash=m.taxonomy.content_hash, embedder=m.embedder, features=h.spec,
            feature_names=h.spec.names, heads=list(HEADS), chosen=h.stack.chosen,
            metric=h.stack.metric, positive=h.stack.positive, cv_loss=h.stack.cv_loss,
            gbm=h.facts.params, knn=h.knn, abstain_below=h.abstain_below, threshold=h.threshold, cascade=m.cascade,
            data_hash=m.data_hash, dev=m.dev, versions=_versions(),
            files={f: _sha(tmp / f) for f in files})
        (tmp / MANIFEST).write_text(manifest.model_dump_json(indent=1))
    return manifest


def read_manifest(path: str | Path) -> ModelManifest:
    file = Path(path) / MANIFEST
    try:
        return ModelManifest.model_validate_json(file.read_text())
    except FileNotFoundError as e:
        raise StoreError("no fitted model here (no manifest.json): run `behavior-rag fit`",
                         file=str(file)) from e
    except (ValidationError, ValueError) as e:
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
    if man.feature_names != man.features.names or (
            man.features.facts and man.feature_names[:len(FACT_FEATURES)] != list(FACT_FEATURES)):
        raise ConfigError("the model's feature set differs from the one this version computes: "
                          "refit", file=str(root / MANIFEST), field="feature_names")
    for name in (*FILES, *(n for n in man.files if n not in FILES)):
        f = root / name
        if not f.is_file() or _sha(f) != man.files.get(name):
            raise StoreError("model file is missing or does not match its checksum in the "
                             "manifest (tampered or half-copied)", file=str(f), field="files")


def _linear(root: Path, name: str, classes: list[str]) -> LinearHead:
    try:
        coef = np.load(root / f"{name}_coef.npy", allow_pickle=False)
        intercept = np.load(root / f"{name}_intercept.npy", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise StoreError(f"cannot read the {name} model: {e}", file=str(root)) from e
    return LinearHead.from_arrays(classes, coef, intercept)


def load_model(path: str | Path, *, taxonomy: Taxonomy, embedder: EmbedderInfo) -> FittedModel:
    """The model at ``path``, checked against the taxonomy and embedder in use."""
    root = Path(path)
    man = read_manifest(root)
    _check(man, root, taxonomy, embedder)
    facts = FactsHead.from_text((root / "facts_gbm.txt").read_text(), man.classes,
                                man.feature_names, man.gbm)
    stack = Stack(man.classes, man.metric, man.positive)
    stack.chosen, stack.cv_loss = list(man.chosen), dict(man.cv_loss)
    stack.model = _linear(root, "stack", man.classes)
    prop = None
    if PROPENSITY in man.files:
        try:
            prop = Propensity.model_validate_json((root / PROPENSITY).read_text())
        except (ValidationError, ValueError) as e:
            raise StoreError(f"invalid propensity table: {e}", file=str(root / PROPENSITY)) \
                from e
    heads = HeadsModel(man.classes, man.features, facts, _linear(root, "embed", man.classes),
                       man.knn, stack, man.abstain_below, propensity=prop,
                       threshold=man.threshold)
    return FittedModel(heads=heads, cascade=man.cascade, taxonomy=taxonomy,
                       embedder=man.embedder, data_hash=man.data_hash, dev=man.dev)

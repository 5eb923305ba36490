"""Model folders of format 1 (three fixed heads, before heads were registered by name) read as
format 2: the same files, the manifest's fixed fields moved under each head's name.

Example:
    >>> v1 = {"format_version": 1, "features": {"facts": True}, "gbm": {}, "knn": {},
    ...       "dev": {"n_train": 1, "n_dev": 1}, "heads": ["facts", "embed", "knn"]}
    >>> sorted(upgrade_manifest(v1)["heads"])
    ['embed', 'facts', 'knn']
"""

from __future__ import annotations

from typing import Any

V1_FILES = {"facts": ["facts_gbm.txt"], "embed": ["embed_coef.npy", "embed_intercept.npy"],
            "knn": []}


def upgrade_manifest(raw: dict[str, Any]) -> dict[str, Any]:
    """A format-1 manifest as format 2 (others unchanged)."""
    if not isinstance(raw, dict) or raw.get("format_version") != 1:
        return raw
    out = {k: v for k, v in raw.items() if k not in ("features", "feature_names", "gbm", "knn")}
    knn = raw.get("knn") or {}
    spec = raw.get("features") or {}
    params = {
        "facts": {"spec": spec, "gbm": raw.get("gbm") or {},
                  "rounds": (raw.get("dev") or {}).get("facts_rounds")},
        "embed": {},
        "knn": {"knn": {"temperature": knn.get("knn_temperature", 0.05),
                        "smoothing": knn.get("knn_smoothing", 0.5),
                        "bias": knn.get("knn_bias") or {}}}}
    out["heads"] = {h: {"params": params[h], "files": V1_FILES[h]}
                    for h in raw.get("heads") or V1_FILES}
    out["history"] = bool(spec.get("history"))
    out["format_version"] = 2
    return out

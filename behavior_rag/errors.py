"""Errors raised by behavior_rag.

Every error the library raises on purpose is a :class:`BehaviorRagError`. Subclasses carry the
context a user needs to fix the problem (file, row, field, value) as attributes, so callers can
react programmatically and the CLI can print them as JSON.

Example:
    >>> try:
    ...     raise IngestError("price must be >= 0", file="a.csv", row=3, field="price", value="-1")
    ... except BehaviorRagError as e:
    ...     print(e)
    a.csv row 3, field 'price' (value '-1'): price must be >= 0
"""

from __future__ import annotations

from typing import Any


class BehaviorRagError(Exception):
    """Base class of every error raised by behavior_rag on purpose."""

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = {k: v for k, v in context.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view: error type, message and context."""
        return {"error": type(self).__name__, "message": self.message, **{
            k: v if isinstance(v, (str, int, float, bool, list, dict)) else str(v)
            for k, v in self.context.items()
        }}


class ConfigError(BehaviorRagError):
    """A setting, column mapping or file that configures us is invalid."""


class DataError(BehaviorRagError):
    """Input data is unusable. Carries ``file``, ``row`` (1-based data row), ``field``, ``value``."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        field: str | None = None,
        value: Any = None,
        **context: Any,
    ) -> None:
        super().__init__(message, file=file, row=row, field=field, value=value, **context)
        self.file, self.row, self.field, self.value = file, row, field, value

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(str(self.file))
        if self.row is not None:
            where.append(f"row {self.row}")
        loc = " ".join(where)
        if self.field:
            loc += (", " if loc else "") + f"field {self.field!r}"
        if self.value is not None:
            shown = str(self.value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            loc += f" (value {shown!r})"
        return f"{loc}: {self.message}" if loc else self.message


class IngestError(DataError):
    """One bad row (or file-level problem) found while ingesting an event log.

    In ``strict`` mode the first error is raised with ``errors`` (all row errors found, capped)
    and ``error_count`` in its context; nothing has been written at that point.
    """

    def __init__(self, message: str, *, errors: list[dict[str, Any]] | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.errors = errors or []
        if errors is not None:
            self.context["errors"] = errors
            self.context["error_count"] = kw.get("error_count", len(errors))


class StoreError(DataError):
    """A session store on disk is missing, corrupt or of an unknown version."""


class WriteConflict(StoreError):
    """Another writer holds the index folder, serves it, or committed since it was opened."""


class RenderError(BehaviorRagError):
    """A session cannot be rendered (e.g. tokenizer missing)."""


class TaxonomyError(DataError):
    """A label taxonomy file is invalid, or a label is not in the taxonomy."""


class LLMError(BehaviorRagError):
    """The language model could not be reached or failed (carries backend, url, attempts)."""


class LLMOutputError(BehaviorRagError):
    """The model's reply did not validate, even after re-asking (carries raw output, attempts)."""

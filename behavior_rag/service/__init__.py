"""The HTTP service (``behavior-rag serve``; needs the ``serve`` extra: FastAPI + uvicorn).

Nothing here imports FastAPI until it is used. The contract it serves (request models, errors,
statuses) is :mod:`behavior_rag.wire`, which the client shares without needing the extra.

Example:
    >>> from behavior_rag.service import create_app, serve_in_background   # doctest: +SKIP
    >>> with serve_in_background(rag, settings) as url:                     # doctest: +SKIP
    ...     Client(url, api_key="...").similar(text="buys gifts", k=3)
"""

from __future__ import annotations

__all__ = ["create_app", "serve_in_background"]


def __getattr__(name: str):
    if name == "create_app":
        from behavior_rag.service.app import create_app

        return create_app
    if name == "serve_in_background":
        from behavior_rag.service.run import serve_in_background

        return serve_in_background
    raise AttributeError(name)

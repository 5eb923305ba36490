"""The web view's live page, ``/ui/live``: open live sessions with their current score and
evidence, refreshed without a page reload by server-sent events (``/ui/live/stream``, one
small JSON document a second) and one small script (``static/live.js``).

Same login as the other pages (the cookie of :mod:`.login`); installed by
:func:`behavior_rag.service.live.install` with the live routes.

Example:
    $ behavior-rag serve --index indexes/demo --insecure-no-auth
    then open http://127.0.0.1:8080/ui/live
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from fastapi.templating import Jinja2Templates

from behavior_rag.live.models import LiveList, LiveView
from behavior_rag.service.auth import api_key
from behavior_rag.service.ui import login
from behavior_rag.settings import ServeSettings

HERE = Path(__file__).parent
ROWS = 50  # sessions shown, most recently active first
EVERY_S = 1.0


def row(v: LiveView) -> dict:
    """What the page shows of one session (the stream's JSON and the first render agree)."""
    p = v.prediction
    return {"session_id": v.session_id, "user_id": v.user_id, "events": v.events,
            "visible": v.visible, "idle_s": round(v.idle_s), "ends_in_s": round(v.ends_in_s),
            "label": p.label if p else None,
            "probability": round(p.probability, 3) if p else None,
            "threshold": round(p.threshold, 3) if p and p.threshold is not None else None,
            "abstained": bool(p and p.abstained), "pending": v.pending,
            "evidence": [e.text or e.fact or "" for e in p.evidence[:3]] if p else []}


def snapshot(listing: LiveList) -> dict:
    return {"open": listing.open, "pending_commit": listing.pending_commit,
            "sessions": [row(v) for v in listing.sessions]}


def install(app, listing, settings: ServeSettings) -> None:
    """``/ui/live`` and its stream; ``listing(n)`` gives the open sessions (raises while not
    ready)."""
    key = api_key(settings)
    templates = Jinja2Templates(directory=str(HERE / "templates"))

    def allowed(request: Request) -> bool:
        return key is None or login.valid(request.cookies.get(login.COOKIE), key)

    def current() -> dict | None:
        try:
            return snapshot(listing(ROWS))
        except Exception:  # not ready yet: the page says so, the stream retries
            return None

    @app.get("/ui/live", include_in_schema=False)
    async def page(request: Request):
        if not allowed(request):
            return RedirectResponse(f"/ui/login?next={quote('/ui/live')}", status_code=303)
        return templates.TemplateResponse(
            request, "live.html", {"v": current(), "nav": True, "auth": key is not None,
                                   "page": "live"}, headers={"Cache-Control": "no-store"})

    @app.get("/ui/live/stream", include_in_schema=False)
    async def stream(request: Request):
        if not allowed(request):
            return JSONResponse({"error": "AuthError", "message": "log in at /ui/login"},
                                status_code=401)

        async def events():
            while not await request.is_disconnected():
                yield f"data: {json.dumps(current())}\n\n"
                await asyncio.sleep(EVERY_S)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

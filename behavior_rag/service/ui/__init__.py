"""The web view served by ``behavior-rag serve`` under ``/ui``: overview, session, similar
shoppers, profile and labelling-queue pages, rendered on the server from templates shipped in
this package (no JavaScript build step; charts are SVG drawn by :mod:`.charts`; the queue's
keys are one small script, ``static/label.js``).

Same app, same key as the JSON API: a login form asks for the API key once and sets an HttpOnly
cookie (:mod:`.login`); with ``--insecure-no-auth`` (loopback only) there is no login. Pages
show exactly what the JSON routes answer (:mod:`.views` calls the same service methods).

Example:
    $ behavior-rag serve --index indexes/demo-personas --insecure-no-auth
    then open http://127.0.0.1:8080/ui/
"""

import asyncio
import secrets
from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode

from pydantic import ValidationError

from behavior_rag.errors import BehaviorRagError
from behavior_rag.labels import NewLabel
from behavior_rag.service.auth import api_key
from behavior_rag.service.limits import ModelSlots
from behavior_rag.service.state import ServiceState
from behavior_rag.service.ui import label, login, views
from behavior_rag.settings import ServeSettings
from behavior_rag.wire.errors import status_for
from behavior_rag.wire.schemas import LabelRequest

HERE = Path(__file__).parent
TITLES = {401: "Not logged in", 404: "Not found", 422: "Invalid input", 503: "Busy, try again",
          504: "Timed out"}


def install(app, state: ServiceState, slots: ModelSlots, settings: ServeSettings) -> None:
    """Mount the web view on ``app`` (routes under ``/ui``, hidden from the OpenAPI schema)."""
    from fastapi import APIRouter, Request
    from fastapi.responses import RedirectResponse
    from fastapi.staticfiles import StaticFiles
    from fastapi.templating import Jinja2Templates

    key = api_key(settings)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    ui = APIRouter(prefix="/ui", include_in_schema=False)
    cache = views.OverviewCache()

    def page(request: Request, name: str, status: int = 200, **context):
        context |= {"nav": name != "login.html", "auth": key is not None,
                    "page": name.removesuffix(".html")}
        return templates.TemplateResponse(request, name, context, status_code=status,
                                          headers={"Cache-Control": "no-store"})

    def allowed(request: Request) -> bool:
        return key is None or login.valid(request.cookies.get(login.COOKIE), key)

    def to_login(request: Request):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/ui/login?next={quote(target)}", status_code=303)

    async def render(request: Request, name: str, build, *args):
        if not allowed(request):
            return to_login(request)
        try:
            state.require_ready()
            v = await slots.run(build, *args)
        except BehaviorRagError as e:
            status = status_for(e)
            return page(request, "error.html", status, title=TITLES.get(status, "Error"),
                        message=e.message, field=e.context.get("field"),
                        value=e.context.get("value"))
        return page(request, name, v=v)

    @ui.get("/")
    async def overview(request: Request):
        return await render(request, "overview.html", cache.get, state)

    @ui.get("/sessions/{session_id:path}")
    async def session(request: Request, session_id: str):
        return await render(request, "session.html", views.session_view, state, session_id)

    def as_stored(request: Request, user_id: str) -> str | None:
        """The pseudonym of a raw ``user_id`` a logged-in client typed (None: already stored
        form), so pages, links and history show only pseudonyms. Never for a client without
        the key: that would be an oracle for the keyed hash."""
        if not allowed(request):
            return None
        stored = state.rag.user_ids(user_id)
        return stored if stored != user_id else None

    @ui.get("/users/{user_id:path}")
    async def profile(request: Request, user_id: str):
        if (stored := as_stored(request, user_id)) is not None:
            return RedirectResponse(f"/ui/users/{quote(stored, safe='')}", status_code=303)
        return await render(request, "profile.html", views.profile_view, state, user_id)

    @ui.get("/similar")
    async def similar(request: Request):
        q = {k: v.strip() for k, v in request.query_params.items()
             if k in ("session_id", "user_id", "text", "label", "category", "start_from",
                      "start_to", "k") and v.strip()}
        if q.get("user_id") and (stored := as_stored(request, q["user_id"])) is not None:
            return RedirectResponse("/ui/similar?" + urlencode(q | {"user_id": stored}),
                                    status_code=303)
        if "k" in q:
            q["k"] = int(q["k"]) if q["k"].isdigit() and 1 <= int(q["k"]) <= 100 else 10
        return await render(request, "similar.html", views.similar_view, state, q)

    csrf = label.CsrfTokens(secrets.token_bytes(32))

    @ui.get("/label")
    async def label_queue(request: Request, last: str | None = None, llm: bool = False):
        token = csrf.token(request.cookies.get(login.COOKIE))
        return await render(request, "label.html", label.label_view, app.state.labels, token,
                            llm, last)

    @ui.post("/label")
    async def label_submit(request: Request):
        if not allowed(request):
            return to_login(request)
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        one = {k: v[0] for k, v in form.items()}
        if not label.same_origin(request.headers.get("origin"), request.headers.get("host")) \
                or not csrf.valid(one.get("csrf"), request.cookies.get(login.COOKIE)):
            return page(request, "error.html", 403, title="Refused",
                        message="This form did not come from this page (cross-site request "
                        "or an expired form): open the labelling queue again.")
        sid = one.get("session_id", "")
        try:
            state.require_ready()
            if one.get("action") == "fit":
                app.state.labels.fit()
                return RedirectResponse("/ui/label", status_code=303)
            if one.get("action") == "skip":
                app.state.labels.skip(sid)
            else:
                req = LabelRequest(labels=[NewLabel(session_id=sid, label=one.get("label", ""))])
                await slots.run(app.state.labels.add, req)
        except (BehaviorRagError, ValidationError) as e:
            msg = e.message if isinstance(e, BehaviorRagError) else str(e.errors()[0]["msg"])
            status = status_for(e) if isinstance(e, BehaviorRagError) else 422
            return page(request, "error.html", status, title=TITLES.get(status, "Error"),
                        message=msg)
        return RedirectResponse(f"/ui/label?last={quote(sid, safe='')}", status_code=303)

    @ui.get("/login")
    async def login_form(request: Request, next: str = "/ui/"):
        if key is None:
            return RedirectResponse(login.safe_next(next), status_code=303)
        return page(request, "login.html", next=login.safe_next(next))

    @ui.post("/login")
    async def login_submit(request: Request):
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        given, target = form.get("api_key", [""])[0], form.get("next", ["/ui/"])[0]
        if key is None or not login.key_matches(given, key):
            await asyncio.sleep(0.5)  # slows guessing; the key is long anyway
            return page(request, "login.html", 401, next=login.safe_next(target),
                        error="Wrong API key." if given else "Enter the API key.")
        resp = RedirectResponse(login.safe_next(target), status_code=303)
        resp.set_cookie(login.COOKIE, login.issue(key), max_age=login.MAX_AGE_S, path="/ui",
                        httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
        return resp

    @ui.post("/logout")
    async def logout(request: Request):
        resp = RedirectResponse("/ui/login", status_code=303)
        resp.delete_cookie(login.COOKIE, path="/ui")
        return resp

    app.include_router(ui)
    app.mount("/ui/static", StaticFiles(directory=str(HERE / "static")), name="ui-static")

    @app.get("/", include_in_schema=False)
    async def root():
        return RedirectResponse("/ui/", status_code=307)

"""The web app: the page, its assets, and the JSON API over one :class:`~charter.Charter`.

:func:`create_app` builds it; ``charter ui`` serves it with uvicorn. Reading goes
through the facade's reading methods, acting through its acting methods (see
:mod:`.actions`), live updates through :meth:`~charter.Charter.follow` (see :mod:`.live`).
The OpenAPI schema is at ``/openapi.json`` and its reference page at ``/docs`` (Swagger
UI, served from ``static/vendor/`` like the page's own assets: it loads nothing from the
internet); like everything else here, they need the token.

It may import the facade, the report types, the events and the workspace's redaction
(tests/unit/test_architecture.py holds it to that); never the engine or the store.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import Body, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..app import Charter
from ..engine.report import RunReport
from ..errors import CharterError, RunNotFoundError, RunStateError, StoreError
from . import actions, live, views
from .runs import list_runs, parse_age
from .safety import SafeJSON, TokenGuard, error

STATIC = resources.files("charter.web") / "static"
Status = Literal["created", "running", "replanning", "awaiting", "paused", "succeeded", "failed", "cancelled",
                 "rejected", "interrupted"]
RunId = Annotated[str, Path(min_length=1, max_length=200, description="A run's id, or a unique prefix of one.")]
StepId = Annotated[str, Path(min_length=1, max_length=200, description="A step's id.")]


def create_app(charter: Charter, token: str) -> FastAPI:
    """The web app over ``charter``, refusing every request without ``token``."""
    driver = actions.Driver(charter)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await driver.stop()

    app = FastAPI(title="Charter", summary="Runs, live: the page and the JSON API of `charter ui`.",
                  version="1", lifespan=lifespan, default_response_class=SafeJSON,
                  docs_url=None, redoc_url=None)  # /docs is served below, from this package's files
    app.state.driver = driver
    app.add_middleware(TokenGuard, token=token)
    _errors(app)
    _pages(app)

    @app.get("/api/runs", summary="Runs, newest first, filtered and paged")
    async def runs(
        status: Annotated[list[Status] | None, Query(description="Only runs with one of these statuses.")] = None,
        age: Annotated[str | None, Query(max_length=20, description="Only runs created this recently: a "
                                         "duration, a number and a unit (s, m, h, d or w), like 30m, 6h or 7d. "
                                         "For a point in time, use `since`.")] = None,
        since: Annotated[float | None, Query(ge=0, description="Only runs created at or after this point in time, "
                                             "in epoch seconds (Unix time, like 1767225600), not a duration: "
                                             "for one, use `age`.")] = None,
        q: Annotated[str | None, Query(max_length=500, description="Text in the goal, request or id.")] = None,
        before: Annotated[str | None, Query(max_length=200, description="The last run id of the page before "
                                            "(the `next` of that page); an unknown run: 404.")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> Any:
        now = time.time()
        if age is not None:
            since = max(since or 0.0, now - parse_age(age))
        rows, more = await list_runs(charter, limit, status=set(status or ()), since=since, text=q or None,
                                     before=before)
        return {"runs": [views.run_row(r) for r in rows], "next": rows[-1].id if more and rows else None,
                "now": now}

    @app.get("/api/runs/{run_id}", summary="A run: goal, plan graph, versions, waterfall, budget, actions")
    async def run(run_id: RunId) -> Any:
        report = await charter.report(run_id)
        state = await charter.state(report.id)
        pruned_at = (await charter.row(report.id)).pruned_at
        deps = {s.id: list(s.deps) for s in state.plan.steps}
        return {**views.run_detail(report, deps, time.time()), "pruned_at": pruned_at,
                **_offered(report, pruned_at)}

    @app.get("/api/runs/{run_id}/value", summary="A run's value, whole")
    async def run_value(run_id: RunId, field: Annotated[Literal["inputs", "output", "plan"], Query()]) -> Any:
        report = await charter.report(run_id)
        if field == "plan":
            return {"value": views.plan_of(report.events)}
        return {"value": report.inputs if field == "inputs" else report.output}

    @app.get("/api/runs/{run_id}/steps/{step_id}", summary="A step: arguments, output, attempts, calls, effects")
    async def step(run_id: RunId, step_id: StepId) -> Any:
        report, step, planned = await views.step_of(charter, run_id, step_id)
        effects = [e for e in await charter.effects(report.id) if e.step_id == step_id]
        return views.step_detail(report, step, list(planned.deps) if planned else [],
                                 dict(planned.retry) if planned else {}, effects)

    @app.get("/api/runs/{run_id}/steps/{step_id}/value", summary="A step's arguments, output or error, whole")
    async def step_value(run_id: RunId, step_id: StepId,
                         field: Annotated[Literal["args", "output", "error"], Query()],
                         item: Annotated[int | None, Query(ge=0)] = None) -> Any:
        _, step, _ = await views.step_of(charter, run_id, step_id)
        if item is not None:
            unit = next((i for i in step.items if i.item == item), None)
            if unit is None:
                raise views.NotFound(f"step {step_id} has no item {item}")
            step = unit
        return {"value": getattr(step, field)}

    @app.get("/api/runs/{run_id}/events/{seq}", summary="One event of a run's log, whole")
    async def event(run_id: RunId, seq: Annotated[int, Path(ge=1)]) -> Any:
        report = await charter.report(run_id)
        if seq > len(report.events):
            raise views.NotFound(f"run {report.id} has {len(report.events)} events, not {seq}")
        ev = report.events[seq - 1]
        return {"seq": seq, "type": ev.type, "at": ev.at, **ev.to_data()}

    @app.get("/api/runs/{run_id}/stream", summary="A run's events as they commit (server-sent events)",
             response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}, "description": "One message per event, "
                              "its id the event's sequence number; never ends by itself."}})
    async def stream(run_id: RunId, after: Annotated[int, Query(ge=0, le=2**62)] = 0,
                     last_event_id: Annotated[str | None, Header(max_length=30)] = None) -> StreamingResponse:
        rid = await charter.resolve(run_id)
        if last_event_id is not None and last_event_id.strip().isdigit():
            after = min(int(last_event_id), 2**62)
        return StreamingResponse(live.stream(charter, rid, after), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get("/api/runs/{run_id}/actions", summary="What can be done to the run now, and what each does")
    async def offered(run_id: RunId) -> Any:
        report = await charter.report(run_id)
        return _offered(report, (await charter.row(report.id)).pruned_at)

    _action_routes(app, charter, driver)
    return app


def _offered(report: RunReport, pruned_at: float | None) -> dict[str, Any]:
    """The actions that fit the run now, and why there are none when it was pruned."""
    return {"actions": actions.offered(report, pruned=pruned_at is not None),
            "actions_note": actions.PRUNED if pruned_at is not None else None}


def _action_routes(app: FastAPI, charter: Charter, driver: actions.Driver) -> None:
    """``POST /api/runs/{id}/{action}``, one route per action, each with its own body."""
    bodies: dict[str, tuple[type[Any], str]] = {
        "approve": (actions.Decision, "Approve the plan (no step) or an approval step; the run goes on here."),
        "reject": (actions.Decision, "Reject the plan (the run ends) or an approval step (it fails)."),
        "revise": (actions.Revision, "Replace the plan of a run that waits for review."),
        "pause": (actions.Stop, "Pause the run."),
        "cancel": (actions.Stop, "Cancel the run for good."),
        "resume": (actions.Empty, "Resume a paused or interrupted run; this server runs it."),
        "retry": (actions.StepChoice, "Run a failed step again, then what it blocked; this server runs it."),
        "rerun": (actions.StepChoice, "A new run from a step, reusing the outputs before it; this server runs it."),
    }
    for name, (model, summary) in bodies.items():
        def route(name: str = name, model: type[Any] = model) -> Any:
            async def do(run_id: RunId, body: Any) -> Any:
                rid = await charter.resolve(run_id)
                return await actions.act(charter, driver, rid, name, body)
            # The body's model is this action's: set as an object, since this module's annotations are text.
            do.__annotations__ = {"run_id": RunId, "body": Annotated[model, Body()], "return": Any}
            return do
        app.post(f"/api/runs/{{run_id}}/{name}", summary=summary, name=name)(route())


def _pages(app: FastAPI) -> None:
    """The page and its assets, served by this server only: the page loads nothing from elsewhere."""
    headers = {"Cache-Control": "no-store",
               "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                          "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
               "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), headers=headers)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        # FastAPI's Swagger UI page, with its script, style and icon from here (not a CDN), and no
        # online validator badge (Swagger UI would send the schema's address to validator.swagger.io).
        return get_swagger_ui_html(openapi_url="/openapi.json", title="Charter API",
                                   swagger_js_url="/static/vendor/swagger-ui-bundle.js",
                                   swagger_css_url="/static/vendor/swagger-ui.css",
                                   swagger_favicon_url="/static/vendor/swagger-ui-favicon.png",
                                   oauth2_redirect_url=None, swagger_ui_parameters={"validatorUrl": None})

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")


def _errors(app: FastAPI) -> None:
    """Every failure as ``{"error": ...}`` with a fitting status; never a traceback."""

    @app.exception_handler(RunNotFoundError)
    async def not_found(request: Request, exc: RunNotFoundError) -> SafeJSON:
        return error(404, str(exc))

    @app.exception_handler(views.NotFound)
    async def no_such(request: Request, exc: views.NotFound) -> SafeJSON:
        return error(404, str(exc))

    @app.exception_handler(RunStateError)
    async def conflict(request: Request, exc: RunStateError) -> SafeJSON:
        return error(409, str(exc))

    @app.exception_handler(StoreError)
    async def unavailable(request: Request, exc: StoreError) -> SafeJSON:
        return error(503, str(exc))  # the store (a database restarting, say): not the request's fault

    @app.exception_handler(CharterError)
    async def refused(request: Request, exc: CharterError) -> SafeJSON:
        return error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> SafeJSON:
        problems = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        return error(422, "invalid request: " + "; ".join(problems), problems=problems)

    @app.exception_handler(StarletteHTTPException)
    async def http(request: Request, exc: StarletteHTTPException) -> SafeJSON:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> SafeJSON:
        return error(500, f"internal error ({type(exc).__name__}); the server's log has the details")

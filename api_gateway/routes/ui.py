"""The web console: its pages and assets at ``/ui`` (open: they hold no data), and the
few JSON views its pages need that the other routes do not answer (behind keys, like
every data route). The pages fetch everything else from the API itself, with the key
the user typed in, so one access policy covers both (api_gateway/access.py)."""

from __future__ import annotations

import asyncio
import html
import time
from importlib import resources
from string import Template
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import func, select, true
from starlette.responses import Response

from api_gateway import console_views
from api_gateway.console_views import MAX_PER_PAGE, Page
from api_gateway.deps import State, Tenant
from api_gateway.history import columns
from api_gateway.json_body import JSONBodyRoute
from api_gateway.responses import JSONResponse
from api_gateway.routes.apps import visible_app
from queues.errors import NotFound
from registry import live_docs
from registry.catalog import Catalog
from registry.registrations import RegistrationRow, RegistrationStore
from registry.tenancy import Namespace

router = APIRouter(tags=["console"], route_class=JSONBodyRoute)

PAGES = {
    "overview": "Overview",
    "app": "App",
    "scaler": "Scaler",
    "jobs": "Batch jobs",
    "registrations": "Registrations",
}
ASSETS = {
    "charts.js": "text/javascript; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
# the console loads nothing from anywhere but this gateway
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> str:
    return resources.files("api_gateway.console").joinpath(name).read_text(encoding="utf-8")


_TEMPLATE = Template(_read("page.html"))
_ASSETS = {name: _read(name).encode() for name in ASSETS}


def render_page(page: str, app: str = "") -> Response:
    body = _TEMPLATE.substitute(
        page=page,
        title=html.escape(f"{PAGES[page]}{' · ' + app if app else ''} · INFaaS console"),
        app=html.escape(app, quote=True),
    )
    return Response(body, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


@router.get("/ui", include_in_schema=False)
async def overview_page() -> Response:
    return render_page("overview")


@router.get("/ui/apps/{app}", include_in_schema=False)
async def app_page(app: str) -> Response:
    return render_page("app", app)


@router.get("/ui/scaler", include_in_schema=False)
async def scaler_page() -> Response:
    return render_page("scaler")


@router.get("/ui/jobs", include_in_schema=False)
async def jobs_page() -> Response:
    return render_page("jobs")


@router.get("/ui/registrations", include_in_schema=False)
async def registrations_page() -> Response:
    return render_page("registrations")


@router.get("/ui/static/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    if name not in _ASSETS:
        raise NotFound(f"the console has no asset {name!r}; it has {', '.join(sorted(ASSETS))}")
    return Response(
        _ASSETS[name], media_type=ASSETS[name], headers={"Cache-Control": "max-age=300"}
    )


PageNumber = Annotated[int, Query(description="1-based page of rows")]
PerPage = Annotated[int, Query(description=f"rows per page, 1 to {MAX_PER_PAGE}")]


@router.get("/v1/console/overview", summary="Apps with live figures, and workers: paged")
async def console_overview(
    state: State,
    tenant: Tenant,
    page: PageNumber = 1,
    per_page: PerPage = console_views.DEFAULT_PER_PAGE,
    workers_page: PageNumber = 1,
    workers_per_page: PerPage = console_views.DEFAULT_PER_PAGE,
    app_filter: Annotated[str, Query(alias="filter", description="app names containing")] = "",
) -> JSONResponse:
    now_s = time.time()
    view = console_views.overview(
        state.catalog_snapshot,
        state.live_snapshot,
        state.history,
        state.accounting.demand(now_s),
        now_s,
        apps_page=Page.of(page, per_page),
        workers_page=Page.of(workers_page, workers_per_page),
        app_filter=console_views.check_filter(app_filter),
        names=tenant.names,
    )
    return JSONResponse(view)


@router.get("/v1/console/apps/{app}/history", summary="An app's load, latency and mix, per s")
async def app_history(
    app: str,
    state: State,
    tenant: Tenant,
    since_s: Annotated[int | None, Query(ge=0, description="only seconds after this")] = None,
) -> JSONResponse:
    """What this gateway served of the app in each second of the last hour (one gateway's
    view; api_gateway/history.py)."""
    names = tenant.names
    internal = await visible_app(state, names, app)
    points = columns(state.history.since(internal, since_s))
    points["mix"] = {names.outside(v): counts for v, counts in points["mix"].items()}
    return JSONResponse(
        {"app": app, "step_s": 1, "newest_s": state.history.newest_s, "points": points}
    )


@router.get("/v1/console/scaler", summary="The scaler's last plan, or null when none runs")
async def console_scaler(state: State, _tenant: Tenant) -> JSONResponse:
    doc = await asyncio.to_thread(live_docs.read_plan, state.services.live)
    message = None if doc is not None else "no scaler has published a plan in the last 5 minutes"
    return JSONResponse({"plan": doc, "message": message})


def registrations_page_of(catalog: Catalog, page: Page, names: Namespace) -> dict[str, Any]:
    """The caller's registrations (an admin: everyone's), newest first, one page."""
    store = RegistrationStore(catalog)
    mine = true() if names.everything else RegistrationRow.tenant == names.tenant
    with catalog.read_session() as session:
        total = session.scalar(select(func.count()).select_from(RegistrationRow).where(mine))
        ids = session.scalars(
            select(RegistrationRow.id)
            .where(mine)
            .order_by(RegistrationRow.created_at.desc(), RegistrationRow.id)
            .limit(page.per_page)
            .offset((page.number - 1) * page.per_page)
        ).all()
    total = total or 0
    found = []
    for registration_id in ids:
        try:
            found.append(store.get(registration_id).to_dict(names.outside))
        except NotFound:  # deleted with its model between the two reads
            continue
    pages = max(1, -(-total // page.per_page))
    return {
        "registrations": found,
        "page": {"page": page.number, "per_page": page.per_page, "total": total, "pages": pages},
    }


@router.get("/v1/console/registrations", summary="Registrations, newest first: paged")
async def console_registrations(
    state: State,
    tenant: Tenant,
    page: PageNumber = 1,
    per_page: PerPage = 20,
) -> JSONResponse:
    view = await asyncio.to_thread(
        registrations_page_of, state.services.catalog, Page.of(page, per_page), tenant.names
    )
    return JSONResponse(view)

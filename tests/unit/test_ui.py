"""The web console without a browser: the load history (api_gateway/history.py), the
overview's views (api_gateway/console_views.py) and the console's routes (routes/ui.py),
paged at 500 apps and 10,000 variants."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from api_gateway.accounting import Accounting
from api_gateway.app import create_app
from api_gateway.console_views import Page, objectives, overview
from api_gateway.history import LoadHistory, columns
from api_gateway.settings import GatewaySettings
from queues.errors import InvalidRequest
from registry import live_docs
from registry.live_docs import ClassDemand, RequirementClass
from registry.livestate import now_ms
from registry.tenancy import Namespace
from tests import factories as f

ONE_MB = 1024 * 1024


def answer(acc: Accounting, app: str, variant: str, elapsed_ms: float, objective: float) -> None:
    acc.answered(
        app,
        variant,
        "cpu",
        elapsed_ms=elapsed_ms,
        latency_ms=objective,
        min_accuracy=0.9,
        accuracy=0.95,
        cost_usd=0.001,
    )


# -- the history -----------------------------------------------------------------------


def test_each_second_records_what_grew_in_it() -> None:
    acc, history = Accounting(), LoadHistory()
    assert history.sample(acc.apps, 1000.2)  # nothing yet: no point
    for _ in range(98):
        answer(acc, "digits", "v1", 2.0, 10.0)
    answer(acc, "digits", "v2", 50.0, 10.0)
    answer(acc, "digits", "v2", 50.0, 10.0)
    assert not history.sample(acc.apps, 1000.9)  # same second: once only
    assert history.sample(acc.apps, 1001.1)
    answer(acc, "digits", "v2", 3.0, 10.0)
    assert history.sample(acc.apps, 1003.5)  # a second later than the next: no gap filling
    first, second = history.since("digits")
    assert (first.t_s, first.queries, first.slo_misses) == (1000, 100, 2)
    assert first.p50_ms == pytest.approx(2.0, rel=0.06)
    assert first.p99_ms == pytest.approx(50.0, rel=0.06)
    assert first.mix == (("v1", 98), ("v2", 2))
    assert first.cost_usd == pytest.approx(0.1)
    assert (second.t_s, second.queries, second.mix) == (1002, 1, (("v2", 1),))
    assert history.since("digits", after_s=1000) == [second]
    cols = columns(history.since("digits"))
    assert cols["t_s"] == [1000, 1002]
    assert cols["qps"] == [100, 1]
    assert cols["mix"] == {"v1": [98, 0], "v2": [2, 1]}
    assert cols["mean_accuracy"] == [pytest.approx(0.95), pytest.approx(0.95)]


def test_the_live_window_merges_histograms_and_drops_older_seconds() -> None:
    acc, history = Accounting(), LoadHistory()
    for second in range(30):
        for _ in range(10):
            answer(acc, "a", "v", 100.0 if second < 15 else 1.0, 10.0)
        history.sample(acc.apps, 2001.0 + second)
    live = history.recent("a", 2031.0)
    assert live["qps"] == pytest.approx(10.0)  # 10 seconds of 10 queries
    assert live["slo_misses"] == 0
    assert live["p99_ms"] == pytest.approx(1.0, rel=0.06)
    assert live["mean_accuracy"] == pytest.approx(0.95)
    assert history.recent("nobody", 2031.0)["qps"] == 0.0
    # only the newest seconds keep their histograms
    assert sum(1 for p in history.since("a") if p.latency_buckets) <= 11


def test_the_history_is_bounded_in_seconds_and_apps() -> None:
    acc, history = Accounting(), LoadHistory(history_s=40, max_apps=2, fine_s=10)
    for second in range(60):
        answer(acc, "a", "v", 1.0 + second, 10.0)
        history.sample(acc.apps, 1.0 + second)
    points = history.since("a")
    # the last 10 s one point a second, the rest of the 40 s ten seconds a point
    assert [p.t_s for p in points] == [10, 20, 30, 40, *range(50, 60)]
    assert [p.span_s for p in points] == [10] * 4 + [1] * 10
    coarse = points[0]
    assert (coarse.queries, coarse.slo_misses, coarse.mix) == (10, 10, (("v", 10),))
    assert coarse.p99_ms == pytest.approx(20.0, rel=0.06)  # the largest second's
    assert coarse.p50_ms == pytest.approx(15.5, rel=0.06)  # the seconds' mean
    cols = columns(points)
    assert cols["qps"] == [1.0] * 14
    assert cols["mix"] == {"v": [1.0] * 14}
    assert [p.t_s for p in history.since("a", after_s=30)] == [40, *range(50, 60)]
    assert [p.t_s for p in history.since("a", after_s=55)] == [56, 57, 58, 59]
    answer(acc, "b", "v", 1.0, 10.0)
    history.sample(acc.apps, 62.0)
    answer(acc, "c", "v", 1.0, 10.0)
    history.sample(acc.apps, 63.0)  # a third app: the idlest (a) is forgotten
    assert history.since("a") == []
    assert [p.t_s for p in history.since("b")] == [61]
    assert [p.t_s for p in history.since("c")] == [62]
    history.sample(acc.apps, 200.0)  # nothing for longer than the history: all forgotten
    assert history.since("b") == history.since("c") == []


# -- the views -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "per_page", "says"),
    [
        (0, 10, "page must be between 1 and 1,000,000"),
        (10**20, 10, "page must be between 1 and 1,000,000"),
        (1, 0, "per_page must be"),
        (1, 201, "per_page must be"),
    ],
)
def test_a_bad_page_is_refused_with_what_to_do(number: int, per_page: int, says: str) -> None:
    with pytest.raises(InvalidRequest, match=says):
        Page.of(number, per_page)


def test_a_page_cuts_rows_and_says_how_many() -> None:
    rows, meta = Page.of(3, 4).cut(list(range(10)))
    assert list(rows) == [8, 9]
    assert meta == {"page": 3, "per_page": 4, "total": 10, "pages": 3}
    assert Page.of(1, 4).cut([])[1]["pages"] == 1


def test_objectives_are_the_tightest_latency_and_highest_floor_with_load() -> None:
    demand = [
        ClassDemand(RequirementClass.of("a", 20.0, 0.9, None), 3.0),
        ClassDemand(RequirementClass.of("a", 10.0, 0.95, None), 1.0),
        ClassDemand(RequirementClass.of("b", None, None, None), 2.0),
    ]
    got = objectives(demand)
    assert got["a"] == {"latency_ms": 10.0, "min_accuracy": 0.95, "qps": 4.0}
    assert got["b"] == {"latency_ms": None, "min_accuracy": None, "qps": 2.0}


def test_the_overview_shows_live_figures_cost_and_what_each_worker_holds() -> None:
    catalog = f.catalog(
        f.variant("m1.onnx-fp32.cpu-t1", 0.95, 1.0, cost=0.1),
        f.variant("m2.onnx-fp32.cpu-t1", 0.97, 2.0, cost=0.2),
        f.variant("n1.onnx-fp32.cpu-t1", 0.9, 1.0, app="other"),
    )
    live = f.live(
        f.worker_report("w1", {"m1.onnx-fp32.cpu-t1": 2}, utilisation=0.5, qps={"m1": 1.0}),
        f.worker_report("w2", {"m1.onnx-fp32.cpu-t1": 1, "m2.onnx-fp32.cpu-t1": 1}),
    )
    acc, history = Accounting(), LoadHistory()
    for _ in range(50):
        answer(acc, "digits", "m1.onnx-fp32.cpu-t1", 12.0, 10.0)
    history.sample(acc.apps, 101.0)
    demand = [ClassDemand(RequirementClass.of("digits", 10.0, 0.9, None), 5.0)]
    view = overview(
        catalog, live, history, demand, 101.5, apps_page=Page(1, 1), workers_page=Page(1, 50)
    )
    assert view["totals"] == {"apps": 2, "models": 3, "variants": 3, "workers": 2}
    assert view["apps_page"] == {"page": 1, "per_page": 1, "total": 2, "pages": 2}
    (row,) = view["apps"]
    assert row["app"] == "digits"
    assert (row["models"], row["variants"], row["running_variants"], row["replicas"]) == (
        2,
        2,
        2,
        4,
    )
    assert row["cost_per_hour_usd"] == pytest.approx(3 * 0.1 + 0.2)
    assert row["live"]["qps"] == pytest.approx(5.0)
    assert row["live"]["slo_misses"] == 50
    assert row["objective"]["latency_ms"] == 10.0
    assert [w["worker"] for w in view["workers"]] == ["w1", "w2"]
    assert view["workers"][0]["holds"][0]["replicas"] == 2
    assert view["hardware"] == [
        {"hardware": "cpu", "workers": 2, "mean_cpu_util": 0.25, "mean_gpu_util": 0.0,
         "replicas": 4}
    ]  # fmt: skip
    filtered = overview(
        catalog, live, history, [], 101.5, apps_page=Page(), workers_page=Page(),
        app_filter="oth",
    )  # fmt: skip
    assert [a["app"] for a in filtered["apps"]] == ["other"]


# -- the routes ------------------------------------------------------------------------


def synthetic_catalog(apps: int, variants_per_app: int) -> Any:
    return f.catalog(
        *(
            f.variant(f"app{a:03d}-m{v % 4}.onnx-fp32.cpu-t{v}", 0.9, 1.0, app=f"app{a:03d}")
            for a in range(apps)
            for v in range(variants_per_app)
        )
    )


@pytest.fixture
def console(tmp_path: Path) -> FastAPI:
    settings = GatewaySettings(freeze_heap=False, auth=False)
    state = f.gateway_state(tmp_path, settings)
    return create_app(settings, state.services)


def get(app: FastAPI, *paths: str) -> list[httpx.Response]:
    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            return [await http.get(p) for p in paths]

    return asyncio.run(main())


def test_every_page_is_html_that_loads_only_from_the_gateway(console: FastAPI) -> None:
    pages = ["/ui", "/ui/apps/digits", "/ui/scaler", "/ui/jobs", "/ui/registrations"]
    assets = ["/ui/static/console.js", "/ui/static/charts.js", "/ui/static/console.css"]
    answers = get(console, *pages, *assets)
    for response in answers[:5]:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in response.headers["content-security-policy"]
    assert 'data-page="app" data-app="digits"' in answers[1].text
    assert answers[5].headers["content-type"].startswith("text/javascript")
    assert answers[6].headers["content-type"].startswith("text/javascript")
    assert answers[7].headers["content-type"].startswith("text/css")
    for response in answers:
        # nothing from a CDN: no absolute URL but the SVG namespace
        urls = set(re.findall(r"https?://[^\s\"'`)]+", response.text))
        assert urls <= {"http://www.w3.org/2000/svg"}, urls
    weight = sum(len(r.content) for r in answers)
    assert weight < 100_000


def test_an_app_name_is_escaped_in_its_page(console: FastAPI) -> None:
    (response,) = get(console, "/ui/apps/%3Cscript%3Ex%22")
    assert response.status_code == 200
    assert "<script>x" not in response.text
    assert 'data-app="&lt;script&gt;x&quot;"' in response.text


def test_an_unknown_asset_or_bad_page_number_is_a_clear_error(console: FastAPI) -> None:
    missing, bad_page, bad_size, long_filter, no_app = get(
        console,
        "/ui/static/secrets.txt",
        "/v1/console/overview?page=99999999999999999999",
        "/v1/console/overview?workers_per_page=500",
        "/v1/console/overview?filter=" + "x" * 200,
        "/v1/console/apps/nope/history",
    )
    assert missing.status_code == 404
    assert "console.js" in missing.json()["error"]["message"]
    for response, says in (
        (bad_page, "page must be between 1 and 1,000,000"),
        (bad_size, "per_page must be between 1 and 200"),
        (long_filter, "at most 128"),
    ):
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_request"
        assert says in response.json()["error"]["message"]
    assert no_app.status_code == 404
    assert no_app.json()["error"]["code"] == "unknown_app"


def test_500_apps_and_10000_variants_page_under_a_megabyte(console: FastAPI) -> None:
    state = console.state.infaas
    state.catalog_snapshot = synthetic_catalog(500, 20)
    assert len(state.catalog_snapshot.variants) == 10_000
    last, widest, one_app, apps = get(
        console,
        "/v1/console/overview?page=20&per_page=25",
        "/v1/console/overview?per_page=200",
        "/v1/apps/app499",
        "/v1/apps",
    )
    body = last.json()
    assert body["apps_page"] == {"page": 20, "per_page": 25, "total": 500, "pages": 20}
    assert [a["app"] for a in body["apps"]][-1] == "app499"
    assert body["totals"]["variants"] == 10_000
    for response in (last, widest, one_app, apps):
        assert response.status_code == 200
        assert len(response.content) < ONE_MB, (response.url, len(response.content))
    assert len(one_app.json()["variants"]) == 20


def test_the_history_route_answers_columns_and_only_newer_seconds(console: FastAPI) -> None:
    state = console.state.infaas
    state.catalog_snapshot = synthetic_catalog(1, 2)
    for second in range(3):
        answer(state.accounting, "app000", "app000-m0.onnx-fp32.cpu-t0", 1.0, 10.0)
        state.history.sample(state.accounting.apps, 500.0 + second)
    everything, newer = get(
        console, "/v1/console/apps/app000/history", "/v1/console/apps/app000/history?since_s=499"
    )
    points = everything.json()["points"]
    assert points["t_s"] == [499, 500, 501]
    assert points["mix"] == {"app000-m0.onnx-fp32.cpu-t0": [1, 1, 1]}
    assert newer.json()["points"]["t_s"] == [500, 501]
    assert orjson.loads(newer.content)["newest_s"] == 501


def test_the_scaler_view_says_when_no_scaler_runs(console: FastAPI) -> None:
    (response,) = get(console, "/v1/console/scaler")
    assert response.status_code == 200
    assert response.json()["plan"] is None
    assert "no scaler" in response.json()["message"]


def test_registrations_list_is_paged_and_empty_at_first(console: FastAPI) -> None:
    first, bad, huge = get(
        console,
        "/v1/console/registrations",
        "/v1/console/registrations?page=0",
        "/v1/console/registrations?page=9223372036854775807&per_page=200",
    )
    assert first.json() == {
        "registrations": [],
        "page": {"page": 1, "per_page": 20, "total": 0, "pages": 1},
    }
    assert bad.status_code == 422
    assert huge.status_code == 422  # not an overflow in the database's OFFSET
    assert huge.json()["error"]["code"] == "invalid_request"


def test_the_scaler_view_answers_the_published_plan(console: FastAPI) -> None:
    plan = {"now_ms": now_ms(), "tick": 7, "actions": [{"kind": "load", "reason": "demand"}]}
    live_docs.put_plan(console.state.infaas.services.live, plan)
    (response,) = get(console, "/v1/console/scaler")
    assert response.json() == {"plan": plan, "message": None}


def test_a_tenant_sees_its_own_apps_and_variants_by_its_own_names() -> None:
    catalog = f.catalog(
        f.variant("acme--m.onnx-fp32.cpu-t1", 0.95, 1.0, app="acme--digits"),
        f.variant("m.onnx-fp32.cpu-t1", 0.95, 1.0, app="digits"),
    )
    live = f.live(
        f.worker_report("w1", {"acme--m.onnx-fp32.cpu-t1": 1, "m.onnx-fp32.cpu-t1": 2}),
    )
    view = overview(
        catalog, live, LoadHistory(), [], 1.0, apps_page=Page(), workers_page=Page(),
        names=Namespace("acme"),
    )  # fmt: skip
    assert [a["app"] for a in view["apps"]] == ["digits"]  # acme's, as acme calls it
    assert view["apps"][0]["replicas"] == 1
    assert view["totals"]["apps"] == view["totals"]["variants"] == 1
    (worker,) = view["workers"]
    assert [h["variant"] for h in worker["holds"]] == ["m.onnx-fp32.cpu-t1"]
    assert worker["others_replicas"] == 2
    admin = overview(catalog, live, LoadHistory(), [], 1.0, apps_page=Page(), workers_page=Page())
    assert [a["app"] for a in admin["apps"]] == ["acme--digits", "digits"]

"""The web console in a real headless browser (Debian's chromium, driven by Playwright)
against the shared embedded stack: every page loads without console errors, the demo
app's variants show the API's numbers, the charts move under load, and registering,
deleting a model and cancelling a job work end to end from the console."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Locator, Page, sync_playwright

from infaas.demo import DEMO_APP
from infaas.demo_models import load_validation
from tests.e2e_support import Stack
from tests.registration_models import Trained, sklearn_onnx

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright downloads no browser of its own
PAGES = ["/ui", f"/ui/apps/{DEMO_APP}", "/ui/scaler", "/ui/jobs", "/ui/registrations"]
WAIT_MS = 20_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where chromium's sandbox refuses to start
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def _open(browser: Browser, *, bypass_csp: bool) -> Page:
    """A page in a fresh context that records console errors and uncaught exceptions."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=bypass_csp)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(_said(m)) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"uncaught: {e}"))
    page.problems = problems  # type: ignore[attr-defined]
    return page


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """For the flows: the page's CSP (default-src 'self') forbids the string predicates
    of Playwright's wait_for_function, so these pages bypass it; the page-load test
    keeps it, so a console that breaks its own CSP fails there."""
    page = _open(browser, bypass_csp=True)
    try:
        yield page
    finally:
        page.context.close()


def _said(message: ConsoleMessage) -> str:
    return f"{message.type}: {message.text} ({message.location})"


def _polled(page: Page) -> None:
    """Wait until the page's first poll has come back without an error."""
    page.locator("#updated:not(:empty)").wait_for()
    assert page.locator("#banner").is_hidden(), page.locator("#banner").inner_text()


def test_every_page_loads_without_console_errors(embedded_e2e: Stack, browser: Browser) -> None:
    page = _open(browser, bypass_csp=False)
    for path in PAGES:
        page.goto(embedded_e2e.url + path)
        _polled(page)
        page.wait_for_timeout(1600)  # a second poll, on a page that has drawn
        assert page.problems == [], (path, page.problems)  # type: ignore[attr-defined]
    page.goto(embedded_e2e.url + "/ui")
    page.wait_for_selector(f"tr[data-app='{DEMO_APP}']")
    assert page.locator("#workers tbody tr").count() >= 1
    page.context.close()


def test_the_demo_apps_variants_show_the_apis_numbers(embedded_e2e: Stack, page: Page) -> None:
    api = httpx.get(f"{embedded_e2e.url}/v1/apps/{DEMO_APP}", timeout=30).json()
    page.goto(f"{embedded_e2e.url}/ui/apps/{DEMO_APP}")
    page.wait_for_selector("#variants-table tbody tr")
    shown = page.locator("#variants-table tbody tr").count()
    assert shown == min(25, len(api["variants"]))
    for variant in api["variants"][:shown]:
        row = page.locator(f"tr[data-variant='{variant['id']}']")

        def cell(field: str, row: Locator = row) -> str:
            return row.locator(f"td[data-field='{field}']").inner_text()

        _same(cell("accuracy"), variant["accuracy"], 0.0006)
        _same(cell("cost_per_hour"), variant["cost_per_hour"], 6e-5)
        assert cell("precision") == variant["precision"]
        assert cell("hardware") == f"{variant['hardware']} t{variant['threads']}"
        assert cell("state") == variant["state"]
        for batch, ms in variant["latency_ms"].items():
            text = row.locator(f".lat[data-batch='{batch}']").inner_text()
            _same(text.split(": ")[1], ms, 0.0006)
        workers = ", ".join(f"{r['worker']} ×{r['replicas']}" for r in variant["replicas"])
        assert cell("replicas") == (workers or "–")
    models = {m["id"] for m in api["models"]}
    assert {page.locator("tr[data-model]").nth(i).get_attribute("data-model")
            for i in range(page.locator("tr[data-model]").count())} == models  # fmt: skip


def _same(shown: str, value: float | None, tolerance: float) -> None:
    """The console's rounding of the API's number; a dash for none."""
    if value is None:
        assert shown == "–"
    else:
        assert float(shown) == pytest.approx(value, abs=tolerance)


def _load(stack: Stack, seconds: float) -> int:
    inputs, _ = load_validation(stack.demo.validation_path)
    rows = inputs[:4].astype(np.float32).tolist()
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        stack.client.infer(DEMO_APP, rows, latency_ms=200, min_accuracy=0.9)
        sent += 1
    return sent


def _chart_sum(page: Page, chart: str) -> float:
    return float(page.locator(f"#{chart}").get_attribute("data-sum") or 0)


def test_charts_move_under_load(embedded_e2e: Stack, page: Page) -> None:
    page.goto(f"{embedded_e2e.url}/ui/apps/{DEMO_APP}")
    page.wait_for_selector("#chart-load svg")
    before = _chart_sum(page, "chart-load")
    sent: list[int] = []
    sender = threading.Thread(target=lambda: sent.append(_load(embedded_e2e, 4.0)))
    sender.start()
    sender.join(timeout=60)
    assert sent
    assert sent[0] > 0
    # the history holds what the gateway answered; the chart shows it within two polls
    page.wait_for_function(
        f"Number(document.getElementById('chart-load').dataset.sum) >= {before + sent[0]}"
    )
    assert _chart_sum(page, "chart-mix") >= before + sent[0]
    assert page.locator("#chart-load polyline").get_attribute("data-points") != "0"
    latency = page.locator("#chart-latency polyline[data-series='p99 ms']")
    assert int(latency.get_attribute("data-points") or 0) > 0


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return sklearn_onnx(tmp_path_factory.mktemp("ui-wine"), "wine-ui", "wine", kind="logreg")


def test_register_then_delete_a_model_from_the_console(
    embedded_e2e: Stack, page: Page, small_model: Trained
) -> None:
    app = f"wine-ui-{uuid.uuid4().hex[:6]}"
    page.goto(f"{embedded_e2e.url}/ui/registrations?app={app}")
    _polled(page)
    form = page.locator("#register")
    form.locator("input[name='model']").set_input_files(str(small_model.path))
    form.locator("input[name='validation']").set_input_files(str(small_model.validation))
    form.locator("input[name='budget_s_per_batch']").fill("0.05")
    form.locator("input[name='create_app']").check()
    form.locator("button[type='submit']").click()
    page.wait_for_selector("#register-result:has-text('accepted')")
    registration = page.locator("#mine article.registration").first
    registration.wait_for()
    status = registration.locator("[data-field='status']")
    page.wait_for_function(
        "document.querySelector(\"#mine [data-field='status']\").textContent === 'ready'",
        timeout=240_000,
    )
    assert status.inner_text() == "ready"
    ready = registration.locator(".chip.ready")
    assert ready.count() >= 1
    api = httpx.get(f"{embedded_e2e.url}/v1/apps/{app}", timeout=30).json()
    assert {v["id"] for v in api["variants"] if v["status"] == "ready"} >= {
        ready.nth(i).get_attribute("data-variant") for i in range(ready.count())
    }
    # delete it from its app's page
    page.goto(f"{embedded_e2e.url}/ui/apps/{app}")
    page.on("dialog", lambda dialog: dialog.accept())
    page.locator("button[data-delete='wine-ui']").click()
    page.wait_for_selector("#notice:has-text('deleted wine-ui')", timeout=120_000)
    left = httpx.get(f"{embedded_e2e.url}/v1/apps/{app}", timeout=30).json()
    assert left["models"] == []
    assert left["variants"] == []
    httpx.delete(f"{embedded_e2e.url}/v1/apps/{app}", timeout=60).raise_for_status()
    assert page.problems == []  # type: ignore[attr-defined]


def test_cancel_a_job_from_the_console(embedded_e2e: Stack, page: Page, tmp_path: Path) -> None:
    stack = embedded_e2e
    inputs, _ = load_validation(stack.demo.validation_path)
    upload = tmp_path / "rows.npz"
    np.savez(upload, inputs=np.resize(inputs.astype(np.float32), (3000, inputs.shape[1])))
    job = stack.client.submit_job(
        DEMO_APP,
        output=f"s3://ui-out-{uuid.uuid4().hex[:8]}/x",
        min_accuracy=0.99,  # only the CNN variants reach it: milliseconds per item
        upload=upload,
        chunk_items=25,
    )
    job_id = job["job_id"]
    page.goto(f"{stack.url}/ui/jobs")
    page.locator(f"button[data-cancel='{job_id}']").click()
    page.wait_for_selector(f"#notice:has-text('job {job_id}: cancelled')")
    status = page.locator(f"tr[data-job='{job_id}'] td[data-field='status']")
    page.wait_for_function(
        f"document.querySelector(\"tr[data-job='{job_id}'] td[data-field='status']\")"
        ".textContent === 'cancelled'"
    )
    assert status.inner_text() == "cancelled"
    after = stack.client.job(job_id)
    assert after["status"] == "cancelled"
    assert after["progress"]["items_done"] < after["progress"]["items_total"]
    assert page.locator(f"button[data-cancel='{job_id}']").count() == 0
    assert page.problems == []  # type: ignore[attr-defined]

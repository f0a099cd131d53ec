"""The console's scaler page and its API keys, in Debian's chromium, on a gateway of its
own (embedded services, no worker, authentication on): a scaler's plans, built as the
scaler builds them (scaler/plan.py) and published to live state, show their actions with
reasons, demand, targets and the plans seen; a key too small for the page is told so;
the key typed into the console is what the API sees. A gateway of its own: a plan in the
shared stack's live state would tell its gateway that a scaler runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from api_gateway.settings import GatewaySettings
from infaas.embedded import LocalStack
from registry import live_docs
from registry.keys import KeyStore, Role
from registry.livestate import now_ms
from scaler.plan import LOAD, SET_REPLICAS, Action, ClassPlan, Plan
from tests.e2e_support import open_embedded

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright downloads no browser of its own


def plan(tick: int, solve_ms: float) -> Plan:
    return Plan(
        now_ms=now_ms(),
        tick=tick,
        policy="infaas",
        actions=(
            Action(
                LOAD,
                worker="w1",
                variant="digits-svc.onnx-fp32.cpu-t1",
                replicas=1,
                reason="class digits|acc>=0.98 has 12 q/s and no replica",
            ),
            Action(
                SET_REPLICAS,
                worker="w1",
                variant="digits-logreg.onnx-fp32.cpu-t1",
                replicas=3,
                reason="30 q/s over 2 replicas' 24 q/s",
            ),
        ),
        planner="greedy",
        status="optimal",
        objective=1.5,
        cost_per_hour=0.144,
        solve_ms=solve_ms,
        timings={"read": 1.0},
        targets={("digits-svc.onnx-fp32.cpu-t1", "w1"): 1},
        demand=(ClassPlan("digits|acc>=0.98", "digits", 12.0, 12.5, 0.0, 12.5, 0.0),),
        deferred=(),
        notes=("a note from the planner",),
    )


def publish(stack: LocalStack, published: Plan) -> None:
    doc = published.to_dict() | {"actuator": "local", "tick_ms": 3.5, "read_ms": 1.25}
    live_docs.put_plan(stack.services.live, doc)


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalStack, dict[Role, str]]]:
    with closing(open_embedded(tmp_path_factory.mktemp("ui-scaler"))) as services:
        store = KeyStore(services.catalog)
        keys = {role: store.create("ops", role).key for role in (Role.QUERY, Role.ADMIN)}
        settings = GatewaySettings(port=0, grpc_port="off", auth=True, freeze_heap=False)
        stack = LocalStack(services, gateway=settings, with_worker=False).start()
        try:
            yield stack, keys
        finally:
            stack.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        yield page
    finally:
        context.close()


def use_key(page: Page, key: str) -> None:
    page.locator("#api-key").fill(key)
    page.locator("#key-form button").click()
    page.locator("#key-state:text-is('key set')").wait_for()


def test_the_scaler_page_shows_plans_actions_and_reasons(
    gateway: tuple[LocalStack, dict[Role, str]], page: Page
) -> None:
    stack, keys = gateway
    page.goto(f"{stack.url}/ui/scaler")
    page.locator("#banner:has-text('API key')").wait_for()  # no key yet: 401, said plainly
    use_key(page, keys[Role.QUERY])
    page.locator("#banner:has-text('needs admin')").wait_for()  # a query key: 403
    use_key(page, keys[Role.ADMIN])
    page.locator("#plan:has-text('no scaler has published a plan')").wait_for()
    first = plan(41, 2.5)
    publish(stack, first)
    page.locator("#plan:has-text('tick 41')").wait_for()
    assert page.locator("#banner").is_hidden()
    text = page.locator("#plan").inner_text()
    for part in ("policy infaas", "planner greedy (optimal)", "solve 2.5 ms", "tick 3.5 ms",
                 "read 1.3 ms", "actuator local", "a note from the planner"):  # fmt: skip
        assert part in text, (part, text)
    rows = page.locator("#actions tbody tr")
    assert rows.count() == 2
    for i, action in enumerate(first.actions):
        cells = rows.nth(i)
        assert cells.locator("td[data-field='kind']").inner_text() == action.kind
        assert cells.locator("td[data-field='variant']").inner_text() == action.variant
        assert cells.locator("td[data-field='reason']").inner_text() == action.reason
        assert cells.locator("td[data-field='replicas']").inner_text() == str(action.replicas)
    demand = page.locator("#demand tbody tr td[data-field='key']")
    assert demand.inner_text() == "digits|acc>=0.98"
    assert page.locator("#targets tbody tr").count() == 1
    publish(stack, plan(42, 7.5))  # the next tick: both in the plans seen
    page.locator("#plans tbody tr:nth-child(2)").wait_for()
    ticks = page.locator("#plans td[data-field='tick']").all_inner_texts()
    assert ticks == ["42", "41"]
    assert page.locator("#chart-solve polyline").get_attribute("data-points") == "2"
    # the key stays with the tab (sessionStorage), not the page
    page.reload()
    page.locator("#plan:has-text('tick 42')").wait_for()
    assert page.locator("#key-state").inner_text() == "key set"

"""The web console, driven in headless Chromium against the real admin app.

Each test tells one story a user walks through and saves a screenshot of its key moment under
test-artifacts/ (gitignored) so a reviewer can see what the user saw.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, ViewportSize, async_playwright, expect

from admin.app import create_app
from store import guardrails, schemas
from store.settings import Settings
from tests.call_rows import Outcome, insert_calls
from tests.conftest import AgentFactory, Api, variant
from tests.router_fixtures import CHANNEL, pin

CHROMIUM = Path("/usr/bin/chromium")
# Debian's chromium, headless, with everything that would phone home switched off.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# A common laptop screen.
VIEWPORT: ViewportSize = {"width": 1366, "height": 820}
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
# Milliseconds: local pages answer in well under a second; a stuck step should fail fast.
STEP_TIMEOUT_MS = 10_000
# The number the stories pin: the one `pin` and `make_pinned_agent` pin by default.
NUMBER = CHANNEL


# --- browser and server ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed with apt-get when missing (CI runs as root)."""
    if not CHROMIUM.exists():
        apt = shutil.which("apt-get")
        if apt is None or os.geteuid() != 0:
            pytest.skip("chromium is missing; install it with: apt-get install -y chromium")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([apt, "update"], check=True, env=env)  # noqa: S603 (fixed arguments)
        subprocess.run(  # noqa: S603 (fixed arguments)
            [apt, "install", "-y", "chromium"], check=True, env=env
        )
    return str(CHROMIUM)


@pytest.fixture(scope="session")
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.fixture
async def console_url(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[str]:
    """The real admin app on a free port, serving the console and the API."""
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def page(browser: Browser, console_url: str) -> AsyncIterator[Page]:
    """A fresh browser context (empty sessionStorage); fails the test on any script error."""
    context = await browser.new_context(viewport=VIEWPORT, base_url=console_url)
    context.set_default_timeout(STEP_TIMEOUT_MS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    # Chrome logs every 4xx fetch as "Failed to load resource"; the console expects those.
    page.on(
        "console",
        lambda msg: (
            errors.append(f"console: {msg.text}")
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    yield page
    await context.close()
    assert errors == []


@dataclass
class Console:
    """What a story does besides using the page: sign in with a role's token, keep a screenshot
    of the test's page."""

    page: Page
    api: Api
    request: pytest.FixtureRequest

    async def sign_in(self, role: str, at: str = "/console/") -> None:
        await self.page.goto(at)
        await self.page.get_by_label("Admin API token").fill(self.api.tokens[role])
        await self.page.get_by_role("button", name="Sign in").click()
        await expect(self.page.get_by_role("navigation", name="Main")).to_be_visible()

    async def open_agent(self, agent_id: str, role: str) -> None:
        await self.sign_in(role, f"/console/#/agents/{agent_id}")
        await expect(self.page.get_by_role("heading", name="History")).to_be_visible()

    async def screenshot(self, suffix: str = "") -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        name = f"{self.request.node.name}{suffix}.png"
        await self.page.screenshot(path=str(ARTIFACTS / name))


@pytest.fixture
def console(page: Page, api: Api, request: pytest.FixtureRequest) -> Console:
    return Console(page, api, request)


# --- the stories -----------------------------------------------------------------------------


async def test_create_agent(page: Page, api: Api, console: Console) -> None:
    await page.goto("/console/")
    await page.get_by_label("Admin API token").fill("agv_not-a-real-token")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_text("This token is not valid")).to_be_visible()

    # Keyboard only: the token field keeps focus after the error, Enter signs in.
    token = page.get_by_label("Admin API token")
    await expect(token).to_be_focused()
    await token.fill(api.tokens["editor"])
    await token.press("Enter")
    await expect(page.get_by_text("editor-user · editor")).to_be_visible()
    await expect(page.get_by_role("link", name="Agents")).to_have_attribute("aria-current", "page")
    form = page.get_by_role("form", name="New agent")
    await form.get_by_role("button", name="Create agent").click()
    await expect(form.get_by_label("Name")).to_have_attribute("aria-invalid", "true")
    await expect(form.get_by_text("String should have at least 1 character")).to_be_visible()
    await console.screenshot("-validation")
    await form.get_by_label("Name").fill("Billing bot")
    await form.get_by_label("System prompt").fill("You help callers with their invoices.")
    await form.get_by_role("button", name="Create agent").click()

    await expect(page.get_by_role("heading", level=1)).to_have_text("Billing bot")
    agents = await api.ok("GET", "/v1/agents")
    assert [a["name"] for a in agents["items"]] == ["Billing bot"]
    assert page.url.endswith(f"#/agents/{agents['items'][0]['id']}")
    await expect(page.get_by_text("never published")).to_be_visible()
    # The token lives in this tab's sessionStorage only: no cookie, nothing in localStorage.
    storage = await page.evaluate("[sessionStorage.length, localStorage.length, document.cookie]")
    assert storage == [1, 0, ""]
    await console.screenshot()


async def test_edit_draft(page: Page, api: Api, make_agent: AgentFactory, console: Console) -> None:
    agent = await make_agent()
    await console.open_agent(agent["id"], "editor")
    await page.get_by_label("System prompt").fill("Answer billing questions briefly.")
    await page.get_by_label("Temperature").fill("0.3")
    await expect(page.get_by_text("Unsaved changes")).to_be_visible()
    await page.get_by_label("Everything else (JSON)").fill(
        '{"tools": [{"name": "lookup_invoice", "type": "function"}]}'
    )
    await page.get_by_role("button", name="Save draft").click()
    await expect(page.get_by_text("Draft saved (revision 2)")).to_be_visible()
    draft = await api.ok("GET", f"/v1/agents/{agent['id']}/draft")
    assert draft["config"]["system_prompt"] == "Answer billing questions briefly."
    assert draft["config"]["llm"]["temperature"] == 0.3
    assert [t["name"] for t in draft["config"]["tools"]] == ["lookup_invoice"]

    # A server-side validation error is shown at the field it concerns.
    temperature = page.get_by_label("Temperature")
    await temperature.fill("5")
    await page.get_by_role("button", name="Save draft").click()
    await expect(temperature).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#draft-llm-temperature-error")).to_contain_text(
        "less than or equal to 2"
    )
    await console.screenshot("-field-error")

    # Someone else saves meanwhile: the If-Match conflict is explained, then overwritten.
    await temperature.fill("0.4")
    await api.ok(
        "PATCH",
        f"/v1/agents/{agent['id']}/draft",
        role="publisher",
        json={"config": {"welcome_message": "Hello from a colleague"}},
    )
    await page.get_by_role("button", name="Save draft").click()
    conflict = page.locator("#conflict-banner")
    await expect(conflict).to_contain_text("Someone else changed this draft")
    await expect(conflict).to_contain_text("publisher-user saved revision 3")
    await conflict.get_by_role("button", name="Show their changes").click()
    await expect(conflict).to_contain_text("Hello from a colleague")
    await console.screenshot()
    await conflict.get_by_role("button", name="Overwrite revision 3 with my edits").click()
    await expect(page.get_by_text("Draft saved (revision 4)")).to_be_visible()
    draft = await api.ok("GET", f"/v1/agents/{agent['id']}/draft")
    assert draft["config"]["llm"]["temperature"] == 0.4

    # Unsaved edits are not lost to a stray click: leaving asks first.
    await page.get_by_label("Welcome message").fill("Not saved yet")
    await page.get_by_role("link", name="Channels").click()  # the confirm is dismissed
    await expect(page.get_by_label("Welcome message")).to_have_value("Not saved yet")
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("link", name="Channels").click()
    await expect(page.get_by_role("heading", name="Channels", level=1)).to_be_visible()


async def test_publish_with_diff_preview(
    page: Page, api: Api, make_agent: AgentFactory, console: Console
) -> None:
    agent = await make_agent(versions=1)
    await api.ok(
        "PATCH",
        f"/v1/agents/{agent['id']}/draft",
        json={"config": {"system_prompt": "Be brief.", "llm": {"model": "gpt-4o"}}},
    )
    await console.open_agent(agent["id"], "publisher")
    await expect(page.get_by_text("unpublished changes")).to_be_visible()
    await page.get_by_role("button", name="Publish…").click()

    dialog = page.get_by_role("dialog", name="Publish V2")
    await expect(
        dialog.get_by_role("heading", name="Changes from V1 to draft revision 3")
    ).to_be_visible()
    await expect(dialog).to_contain_text('system_prompt: "Prompt of version 1." → "Be brief."')
    await expect(dialog).to_contain_text('llm.model: "gpt-4o-mini" → "gpt-4o"')
    await expect(dialog.locator(".diff-add")).to_have_count(2)
    await dialog.get_by_role("button", name="Publish V2").click()
    await expect(dialog.get_by_text("Give the version a name.")).to_be_visible()
    # Limits come from the server's document, not from copies in the console.
    name_limit = str(schemas.MAX_VERSION_NAME_CHARS)
    await expect(dialog.get_by_label("Version name")).to_have_attribute("maxlength", name_limit)
    description_limit = str(schemas.MAX_DESCRIPTION_CHARS)
    await expect(dialog.get_by_label("Description")).to_have_attribute(
        "maxlength", description_limit
    )
    await dialog.get_by_label("Version name").fill("Shorter prompt")
    await dialog.get_by_label("Description").fill("Cuts the prompt and moves to gpt-4o.")
    await console.screenshot()
    await dialog.get_by_role("button", name="Publish V2").click()

    await expect(page.get_by_text("Published V2 “Shorter prompt”.")).to_be_visible()
    history = page.get_by_role("list", name="Draft, then versions newest first")
    await expect(history.locator(".history-title")).to_have_text(
        ["Draftsame as V2", "V2 Shorter prompt", "V1 v1"]
    )
    versions = await api.ok("GET", f"/v1/agents/{agent['id']}/versions")
    assert [(v["version"], v["name"], v["author"]) for v in versions["items"]] == [
        (2, "Shorter prompt", "publisher-user"),
        (1, "v1", "admin-user"),
    ]
    assert versions["items"][0]["description"] == "Cuts the prompt and moves to gpt-4o."


async def test_pin_number_to_v1(
    page: Page, api: Api, make_agent: AgentFactory, console: Console
) -> None:
    agent = await make_agent(versions=2)
    await console.sign_in("publisher", "/console/#/channels")
    form = page.get_by_role("form", name="Pin a number")
    await form.get_by_label("Phone number (E.164)").fill("4155550100")
    await form.get_by_role("button", name="Pin").click()
    await expect(form.get_by_text("Use E.164")).to_be_visible()
    await form.get_by_label("Phone number (E.164)").fill(NUMBER)
    await form.get_by_label("Agent").select_option(agent["id"])
    await form.get_by_label("Version").select_option("1")
    await form.get_by_role("button", name="Pin").click()

    row = page.locator(f"tr[data-number='{NUMBER}']")
    await expect(row.get_by_label(f"Version served on {NUMBER}")).to_have_value("1")
    channel = await api.ok("GET", f"/v1/channels/{NUMBER}")
    assert [(v["agent_id"], v["version"], v["weight"]) for v in channel["variants"]] == [
        (agent["id"], 1, 100)
    ]
    # The row's dropdown moves the pin: Draft, then back to V1.
    await row.get_by_label(f"Version served on {NUMBER}").select_option("draft")
    await row.get_by_role("button", name=f"Apply the version for {NUMBER}").click()
    await expect(page.get_by_text(f"{NUMBER} now serves Support bot Draft.")).to_be_visible()
    await row.get_by_label(f"Version served on {NUMBER}").select_option("1")
    await row.get_by_role("button", name=f"Apply the version for {NUMBER}").click()
    await expect(page.get_by_text(f"{NUMBER} now serves Support bot V1.")).to_be_visible()
    channel = await api.ok("GET", f"/v1/channels/{NUMBER}")
    assert (channel["variants"][0]["version"], channel["revision"]) == (1, 3)
    await console.screenshot()


async def test_start_80_20_test(
    page: Page, api: Api, make_pinned_agent: AgentFactory, console: Console
) -> None:
    await make_pinned_agent(versions=2, pinned=1)
    await console.sign_in("publisher", "/console/#/channels")
    await page.get_by_role("button", name=f"A/B test on {NUMBER}").click()

    dialog = page.get_by_role("dialog", name=f"A/B test on {NUMBER}")
    weights = dialog.get_by_label("Weight in percent")
    await expect(weights).to_have_count(2)
    await weights.nth(1).fill("30")
    await expect(dialog.locator("#ab-total")).to_have_text("Total 110%")
    await dialog.get_by_role("button", name="Save and start").click()
    await expect(dialog.get_by_text("make them add up to 100%")).to_be_visible()
    await weights.nth(1).fill("20")
    await expect(dialog.locator("#ab-total")).to_have_text("Total 100%")
    versions = dialog.locator("select[id$='-version']")
    await expect(versions.nth(0)).to_have_value("1")
    await expect(versions.nth(1)).to_have_value("2")
    await dialog.get_by_label("By caller").check()
    await dialog.get_by_role("button", name="Add rule").click()
    metric = dialog.get_by_label("Metric", exact=True)
    assert await metric.locator("option").evaluate_all("os => os.map(o => o.value)") == list(
        guardrails.METRICS
    )
    await expect(dialog.get_by_label("Minimum calls before the rule applies")).to_have_value(
        str(guardrails.DEFAULT_MIN_CALLS)
    )
    await metric.select_option("automation_rate")
    await dialog.get_by_label("Breaks when the metric is").select_option("<")
    await dialog.get_by_label("Threshold").fill("0.5")
    await dialog.get_by_label("Minimum calls before the rule applies").fill("50")
    await console.screenshot("-editor")
    await dialog.get_by_role("button", name="Save and start").click()

    await expect(page.get_by_text("control 80%, challenger 20%")).to_be_visible()
    row = page.locator(f"tr[data-number='{NUMBER}']")
    await expect(row).to_contain_text("80% control: Support bot V1")
    await expect(row).to_contain_text("20% challenger: Support bot V2")
    channel = await api.ok("GET", f"/v1/channels/{NUMBER}")
    assert channel["sticky"] == "caller"
    assert [(v["label"], v["version"], v["weight"]) for v in channel["variants"]] == [
        ("control", 1, 80),
        ("challenger", 2, 20),
    ]
    saved = await api.ok("GET", f"/v1/channels/{NUMBER}/guardrails")
    assert saved["rules"] == [
        {"metric": "automation_rate", "op": "<", "threshold": 0.5, "min_calls": 50}
    ]
    await console.screenshot()


async def test_start_watch_and_abort_a_rollout(
    page: Page, api: Api, pool: asyncpg.Pool, make_pinned_agent: AgentFactory, console: Console
) -> None:
    agent = await make_pinned_agent(versions=2, pinned=1)
    await console.sign_in("publisher", "/console/#/channels")
    await page.get_by_role("button", name=f"Rollout on {NUMBER}").click()

    dialog = page.get_by_role("dialog", name=f"Start a rollout on {NUMBER}")
    await dialog.get_by_label("Target Version").select_option("2")
    await dialog.get_by_label("Steps (percent of calls, ending at 100)").fill("10, 5, 100")
    await dialog.get_by_role("button", name="Add rule").click()
    await dialog.get_by_label("Metric", exact=True).select_option("automation_rate")
    await dialog.get_by_label("Threshold").fill("0.5")
    await dialog.get_by_role("button", name="Start rollout").click()
    await expect(dialog.locator("#rollout-steps-error")).to_have_text(
        "must be larger than the step before"
    )
    await dialog.get_by_label("Steps (percent of calls, ending at 100)").fill("10, 50, 100")
    await dialog.get_by_role("button", name="Start rollout").click()
    await expect(page.get_by_text(f"Rollout on {NUMBER} started.")).to_be_visible()

    now = datetime.now(UTC)
    await insert_calls(
        pool, agent["id"], 2, [Outcome(automated=True)] * 4, variant="rollout", started_at=now
    )
    await insert_calls(pool, agent["id"], 1, [Outcome(automated=True)] * 9, started_at=now)
    await page.get_by_role("button", name=f"Rollout on {NUMBER}").click()
    watching = page.get_by_role("dialog", name=f"Rollout on {NUMBER}")
    await expect(watching.get_by_text("Step 1 of 3: 10% on rollout")).to_be_visible()
    steps = watching.get_by_role("list", name="Rollout steps").get_by_role("listitem")
    await expect(steps).to_have_text(["10%", "50%", "100%"])
    await expect(watching.get_by_text("4 (4 analysed)")).to_be_visible()
    await expect(watching.get_by_text("9 (9 analysed)")).to_be_visible()
    await expect(watching.get_by_text("automation_rate < 0.5: holding")).to_be_visible()
    await console.screenshot()
    await watching.get_by_role("button", name="Abort").click()

    await expect(page.get_by_text(f"Rollout on {NUMBER}: abort done.")).to_be_visible()
    channel = await api.ok("GET", f"/v1/channels/{NUMBER}")
    assert [(v["label"], v["version"], v["weight"]) for v in channel["variants"]] == [
        ("default", 1, 100)
    ]
    [rollout] = (await api.ok("GET", f"/v1/channels/{NUMBER}/rollouts"))["items"]
    assert (rollout["state"], rollout["steps"]) == ("aborted", [10, 50, 100])
    assert rollout["rules"][0]["metric"] == "automation_rate"


async def test_view_call_filtered_by_version(
    page: Page,
    pool: asyncpg.Pool,
    make_pinned_agent: AgentFactory,
    console: Console,
) -> None:
    agent = await make_pinned_agent(versions=2, pinned=1)
    answered = Outcome(automated=True, sentiment="positive", duration_s=90.0)
    [v1_call] = await insert_calls(
        pool, agent["id"], 1, [replace(answered, duration_s=42.0)], variant="control"
    )
    await insert_calls(pool, agent["id"], 2, [answered], variant="challenger")
    await console.sign_in("viewer", f"/console/#/calls?agent_id={agent['id']}")
    calls = page.locator("table.calls tbody tr")
    await expect(calls).to_have_count(2)

    await page.get_by_label("Version").select_option("1")
    await page.get_by_role("button", name="Apply filters").click()
    await expect(
        page.get_by_role("heading", name="1 call — agent Support bot, version V1")
    ).to_be_visible()
    await expect(calls).to_have_count(1)
    await expect(calls.first).to_contain_text("42 s")
    assert "version=1" in page.url
    await page.get_by_role("button", name=f"Details of call {v1_call}").click()
    dialog = page.get_by_role("dialog", name=f"Call {v1_call}")
    await expect(dialog).to_contain_text("Served V1 of Support bot as variant “control”.")
    await console.screenshot()


async def test_restore_v1(page: Page, api: Api, make_agent: AgentFactory, console: Console) -> None:
    agent = await make_agent(versions=2)
    await api.ok(
        "PATCH", f"/v1/agents/{agent['id']}/draft", json={"config": {"welcome_message": "WIP"}}
    )
    await console.open_agent(agent["id"], "publisher")
    await page.get_by_role("button", name="Restore V1 into the draft").click()

    dialog = page.get_by_role("dialog", name="Restore V1 into the draft?")
    await expect(dialog).to_contain_text("Unpublished draft changes will be lost.")
    await expect(dialog).to_contain_text("differs from V2")
    await expect(dialog.get_by_role("button", name="Publish the draft first…")).to_be_visible()
    await console.screenshot("-warning")
    await dialog.get_by_role("button", name="Restore V1").click()

    await expect(page.get_by_text("Restored V1 into the draft (revision 5).")).to_be_visible()
    await expect(page.get_by_label("System prompt")).to_have_value("Prompt of version 1.")
    await expect(page.get_by_label("Welcome message")).to_have_value("")
    await expect(page.locator(".draft-item .badge")).to_have_text("same as V1")
    draft = await api.ok("GET", f"/v1/agents/{agent['id']}/draft")
    v1 = await api.ok("GET", f"/v1/agents/{agent['id']}/versions/1")
    assert (draft["revision"], draft["config_hash"]) == (5, v1["config_hash"])
    await console.screenshot()


async def test_compare_any_two_versions(
    page: Page, make_agent: AgentFactory, console: Console
) -> None:
    agent = await make_agent(versions=3)
    await console.open_agent(agent["id"], "viewer")
    compare = page.get_by_role("button", name="Compare selected")
    await expect(compare).to_be_disabled()
    await page.get_by_label("Select V3 for comparison").check()
    await page.get_by_label("Select V1 for comparison").check()
    await compare.click()
    dialog = page.get_by_role("dialog", name="Compare V1 → V3")
    await expect(dialog).to_contain_text(
        'system_prompt: "Prompt of version 1." → "Prompt of version 3."'
    )
    await expect(dialog.locator(".diff-del")).to_have_count(1)
    await console.screenshot()
    await page.keyboard.press("Escape")
    await expect(dialog).to_have_count(0)
    await page.get_by_role("button", name="Open V2").click()
    await expect(page.get_by_role("dialog", name="V2 — v2")).to_contain_text("Prompt of version 2.")


async def test_viewer_sees_disabled_actions_with_reasons(
    page: Page, make_agent: AgentFactory, console: Console
) -> None:
    agent = await make_agent(versions=1)
    await console.open_agent(agent["id"], "viewer")
    publish = page.get_by_role("button", name="Publish…")
    await expect(publish).to_be_disabled()
    await expect(publish).to_have_attribute(
        "title", "Publishing needs the publisher role; you are signed in as viewer."
    )
    await expect(page.get_by_role("button", name="Save draft")).to_be_disabled()
    await expect(page.get_by_role("button", name="Restore V1 into the draft")).to_be_disabled()
    await expect(page.get_by_text("Needs publisher role").first).to_be_visible()
    await expect(page.get_by_label("System prompt")).not_to_be_editable()
    await console.screenshot()
    await page.get_by_role("link", name="Channels").click()
    await expect(page.get_by_role("button", name="Pin")).to_be_disabled()


async def test_analytics_compares_versions_and_variants(
    page: Page,
    api: Api,
    pool: asyncpg.Pool,
    make_agent: AgentFactory,
    console: Console,
) -> None:
    agent = await make_agent(versions=2)
    variants = [variant(agent, "control", 1, 80), variant(agent, "challenger", 2, 20)]
    await pin(api, {"variants": variants})
    control = [
        Outcome(automated=i % 2 == 0, sentiment="positive", duration_s=60.0 + 3 * i)
        for i in range(40)
    ]
    challenger = [
        Outcome(
            automated=i % 10 != 0,
            sentiment="negative" if i % 5 == 0 else "neutral",
            duration_s=40.0 + 2 * i,
        )
        for i in range(40)
    ]
    await insert_calls(pool, agent["id"], 1, control, variant="control")
    await insert_calls(pool, agent["id"], 2, challenger, variant="challenger")
    await console.sign_in(
        "viewer", f"/console/#/analytics?agent_id={agent['id']}&channel=%2B{NUMBER[1:]}"
    )
    versions = page.get_by_role("region", name="Versions compared")
    await expect(versions.get_by_role("img", name="Automation rate by version")).to_be_visible()
    await expect(versions.get_by_role("img", name="Call duration by version")).to_be_visible()
    await expect(versions.get_by_role("img", name="Sentiment by version")).to_be_visible()
    rows = versions.locator("table.verdicts tbody tr")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(1)).to_contain_text("better")
    await expect(rows.nth(1)).to_contain_text("vs V1: automation +40.0 pts")
    ab = page.get_by_role("region", name="A/B tests")
    await expect(ab.locator("table.verdicts tbody th")).to_have_text(
        ["control (V1, 80%)", "challenger (V2, 20%)"]
    )
    await console.screenshot()


async def test_dry_run(page: Page, make_pinned_agent: AgentFactory, console: Console) -> None:
    await make_pinned_agent(versions=1, pinned=1)
    await console.sign_in("viewer", "/console/#/channels")
    box = page.get_by_role("form", name="Dry run")
    await box.get_by_label("Number called").fill(NUMBER)
    await box.get_by_label("Caller number").fill("+15551230000")
    await box.get_by_role("button", name="Resolve").click()
    await expect(box.locator(".resolution")).to_contain_text("Support bot V1")
    await expect(box).to_contain_text("Why: a fresh draw on the caller (or call) hash")
    await console.screenshot()


async def test_console_is_served_by_the_admin_service(console_url: str, api: Api) -> None:
    """Every asset comes from the admin service, under a CSP that allows nothing else."""
    index = await api.call("GET", "/console/", role=None)
    assert index.status == 200
    assert "default-src 'self'" in index.headers["Content-Security-Policy"]
    html = await index.text()
    assert "http://" not in html and "https://" not in html
    script = await api.call("GET", "/console/app.js", role=None)
    assert script.headers["Content-Type"].startswith("text/javascript")
    for bad in ("/console/../app.py", "/console/%2e%2e%2fapp.py", "/console/nope.js"):
        assert (await api.call("GET", bad, role=None)).status == 404, bad
    root = await api.call("GET", "/", role=None, allow_redirects=False)
    assert (root.status, root.headers["Location"]) == (302, "/console/")
    assert await api.ok("GET", "/v1/whoami", role="editor") == {
        "name": "editor-user",
        "role": "editor",
    }

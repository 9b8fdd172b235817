"""The web console, driven in headless Chromium against the real admin app.

Each test tells one story a user walks through and saves a screenshot of its key moment under
test-artifacts/ (gitignored) so a reviewer can see what the user saw.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web
from playwright.async_api import (
    Browser,
    Locator,
    Page,
    ViewportSize,
    async_playwright,
    expect,
)

from admin.app import create_app
from store import guardrails, schemas
from store.settings import Settings
from tests.call_rows import Outcome, insert_calls
from tests.conftest import AgentFactory, Api, variant
from tests.debian import debian_tool
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
    """Debian's chromium, installed with apt-get when missing."""
    return debian_tool(CHROMIUM, "chromium")


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
    # One heading introduces the diff: the dialog's title, then the diff's own, nothing repeated.
    await expect(dialog.get_by_role("heading")).to_have_text(
        ["Publish V2", "Changes from V1 to draft revision 3"]
    )
    await expect(dialog.get_by_label("Publish anyway", exact=False)).to_be_hidden()
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
    # An edit saved while the dialog is open is never published unseen: the server refuses the
    # reviewed revision (If-Match) and the dialog shows the new diff.
    await api.ok(
        "PATCH", f"/v1/agents/{agent['id']}/draft", json={"config": {"system_prompt": "Be brief!"}}
    )
    await dialog.get_by_role("button", name="Publish V2").click()
    await expect(dialog.get_by_text("you reviewed 3")).to_be_visible()
    await expect(
        dialog.get_by_role("heading", name="Changes from V1 to draft revision 4")
    ).to_be_visible()
    assert (await api.ok("GET", f"/v1/agents/{agent['id']}"))["latest_version"] == 1
    await console.screenshot("-changed-meanwhile")
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
    # Picking the agent picks its latest published version, not the live draft.
    await expect(form.get_by_label("Version")).to_have_value("2")
    await form.get_by_label("Version").select_option("1")
    await form.get_by_role("button", name="Pin").click()

    row = page.locator(f"tr[data-number='{NUMBER}']")
    await expect(row.get_by_label(f"Version served on {NUMBER}")).to_have_value("1")
    channel = await api.ok("GET", f"/v1/channels/{NUMBER}")
    assert [(v["agent_id"], v["version"], v["weight"]) for v in channel["variants"]] == [
        (agent["id"], 1, 100)
    ]
    # The row's dropdown moves the pin: Draft (asked first; cancelling changes nothing), then
    # back to V1.
    await row.get_by_label(f"Version served on {NUMBER}").select_option("draft")
    apply = row.get_by_role("button", name=f"Apply the version for {NUMBER}")
    await apply.click()
    confirm = page.get_by_role("dialog", name=f"Pin {NUMBER} to the draft?")
    await expect(confirm).to_be_visible()
    await expect(confirm).to_contain_text("every saved edit reaches callers at once")
    await console.screenshot("-confirm-draft")
    await confirm.get_by_role("button", name="Cancel").click()
    await expect(confirm).to_have_count(0)
    assert (await api.ok("GET", f"/v1/channels/{NUMBER}"))["variants"][0]["version"] == 1
    await apply.click()
    await confirm.get_by_role("button", name="Pin to the draft").click()
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
    weights = dialog.get_by_label("Weight", exact=True)
    shares = dialog.get_by_label("Share of calls")
    await expect(weights).to_have_count(2)
    await expect(dialog).not_to_contain_text("must add up to 100")
    await weights.nth(1).fill("30")
    await expect(dialog.locator("#ab-total")).to_have_text("Total weight 110")
    await expect(shares).to_have_text(["72.7%", "27.3%"])
    await weights.nth(0).fill("0")
    await weights.nth(1).fill("0")
    await dialog.get_by_role("button", name="Save and start").click()
    await expect(dialog.get_by_text("Give at least one variant a weight above 0.")).to_be_visible()
    await weights.nth(0).fill("80")
    await weights.nth(1).fill("20")
    await expect(dialog.locator("#ab-total")).to_have_text("Total weight 100")
    await expect(shares).to_have_text(["80%", "20%"])
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


async def test_ab_editor_keeps_the_weights_as_stored(
    page: Page, api: Api, make_agent: AgentFactory, console: Console
) -> None:
    agent = await make_agent(versions=2)
    variants = [variant(agent, "a", 1, 3), variant(agent, "b", 2, 1)]
    await api.ok("PUT", f"/v1/channels/{NUMBER}", json={"variants": variants})
    await console.sign_in("publisher", "/console/#/channels")
    row = page.locator(f"tr[data-number='{NUMBER}']")
    await expect(row).to_contain_text("75% a: Support bot V1")
    await page.get_by_role("button", name=f"A/B test on {NUMBER}").click()

    dialog = page.get_by_role("dialog", name=f"A/B test on {NUMBER}")
    weights = dialog.get_by_label("Weight", exact=True)
    await expect(weights.nth(0)).to_have_value("3")
    await expect(weights.nth(1)).to_have_value("1")
    await expect(dialog.get_by_label("Share of calls")).to_have_text(["75%", "25%"])
    await expect(dialog).to_contain_text("stored as you enter them")
    await console.screenshot()
    await dialog.get_by_role("button", name="Save and start").click()
    await expect(page.get_by_text("a 75%, b 25%")).to_be_visible()
    channel = await api.ok("GET", f"/v1/channels/{NUMBER}")
    assert [v["weight"] for v in channel["variants"]] == [3, 1]  # not rescaled to 75/25


async def test_sign_out_shows_only_when_signed_in(page: Page, console: Console) -> None:
    await page.goto("/console/")
    await expect(page.get_by_label("Admin API token")).to_be_visible()
    sign_out = page.get_by_role("button", name="Sign out", include_hidden=True)
    await expect(sign_out).to_be_hidden()
    await console.screenshot("-signed-out")
    await console.sign_in("viewer")
    await expect(sign_out).to_be_visible()
    await sign_out.click()
    await expect(page.get_by_text("Signed out.")).to_be_visible()
    await expect(sign_out).to_be_hidden()


async def _covered(page: Page, selector: str) -> str | None:
    """What covers the middle of `selector`'s first element (None: the element itself shows)."""
    covered: str | None = await page.evaluate(
        """(selector) => {
            const el = document.querySelector(selector);
            const box = el.getBoundingClientRect();
            if (box.bottom > window.innerHeight || box.top < 0) return 'outside the viewport';
            const x = box.left + box.width / 2, y = box.top + box.height / 2;
            const top = document.elementFromPoint(x, y);
            return el.contains(top) ? null : (top?.className || top?.tagName || 'nothing');
        }""",
        selector,
    )
    return covered


async def test_the_save_bar_never_covers_what_focus_moves_to(
    page: Page, make_agent: AgentFactory, console: Console
) -> None:
    agent = await make_agent()
    await console.open_agent(agent["id"], "editor")
    # Keyboard users tab from the LLM section into the Voice section: the page scrolls just
    # enough, and the sticky Save bar at the bottom must not sit on the heading or the field.
    await page.evaluate("window.scrollTo(0, 0)")
    await page.get_by_label("Max tokens").focus()
    await page.keyboard.press("Tab")
    await expect(page.get_by_label("TTS provider")).to_be_focused()
    voice = "fieldset:has(#draft-voice-tts_provider) > legend"
    assert await _covered(page, voice) is None
    assert await _covered(page, "#draft-voice-tts_provider") is None
    # Scrolled into view as little as possible (a link, a keyboard user in Firefox, the
    # console's own scrollIntoView): the heading stops above the bar, not under it.
    for selector in (voice, "#draft-voice-tts_provider"):
        await page.evaluate("window.scrollTo(0, 0)")
        await page.evaluate(
            "(s) => document.querySelector(s).scrollIntoView({block: 'nearest'})", selector
        )
        assert await _covered(page, selector) is None, selector
    await expect(page.locator(voice)).to_be_in_viewport()
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


async def test_calls_page_shows_the_total(
    page: Page, pool: asyncpg.Pool, make_pinned_agent: AgentFactory, console: Console
) -> None:
    agent = await make_pinned_agent(versions=1, pinned=1)
    await insert_calls(pool, agent["id"], 1, [Outcome(duration_s=30.0)] * 60)
    await console.sign_in("viewer", f"/console/#/calls?agent_id={agent['id']}")
    rows = page.locator("table.calls tbody tr")
    await expect(rows).to_have_count(50)
    await expect(page.get_by_role("heading", name="60 calls — agent Support bot")).to_be_visible()
    await expect(page.get_by_text("Showing the newest 50")).to_be_visible()
    await console.screenshot()
    await page.get_by_role("button", name="Load more").click()
    await expect(rows).to_have_count(60)
    await expect(page.get_by_role("heading", name="60 calls — agent Support bot")).to_be_visible()
    await expect(page.get_by_text("Showing the newest 60")).to_be_visible()


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


# Every text of every chart, as [text, its left and right edge, the drawing's width] in the
# chart's own units: a label or value drawn past either edge is clipped off screen.
CHART_TEXT_EXTENTS = """
(root) => [...root.querySelectorAll('svg.chart')].flatMap((svg) => {
  const width = svg.viewBox.baseVal.width;
  return [...svg.querySelectorAll('text')].map((t) => {
    const box = t.getBBox();
    return [t.textContent, box.x, box.x + box.width, width];
  });
})
"""


async def _assert_no_chart_text_clipped(region: Locator) -> list[str]:
    extents = await region.evaluate(CHART_TEXT_EXTENTS)
    clipped = [text for text, left, right, width in extents if left < 0 or right > width]
    assert extents and clipped == []
    return [text for text, *_ in extents]


async def test_analytics_compares_versions_and_variants(
    page: Page,
    api: Api,
    pool: asyncpg.Pool,
    make_agent: AgentFactory,
    console: Console,
) -> None:
    agent = await make_agent(versions=2)
    variants = [variant(agent, "control", 1, 80), variant(agent, "challenger", None, 20)]
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
    await insert_calls(pool, agent["id"], None, challenger, variant="challenger")
    # Older calls, outside the range picked below.
    long_ago = datetime(2025, 3, 1, 12, tzinfo=UTC)
    await insert_calls(pool, agent["id"], 2, control[:5], started_at=long_ago)
    await console.sign_in(
        "viewer", f"/console/#/analytics?agent_id={agent['id']}&channel=%2B{NUMBER[1:]}"
    )
    versions = page.get_by_role("region", name="Versions compared")
    await expect(versions.get_by_role("img", name="Automation rate by version")).to_be_visible()
    await expect(versions.get_by_role("img", name="Call duration by version")).to_be_visible()
    await expect(versions.get_by_role("img", name="Sentiment by version")).to_be_visible()
    rows = versions.locator("table.verdicts tbody tr")
    await expect(rows).to_have_count(3)
    # Over all time the draft is compared with V2, which has only its 5 old calls.
    await expect(rows.nth(2)).to_contain_text("too few calls")

    # The date range leaves the old V2 calls out (in the URL too): the draft meets V1.
    today = datetime.now(UTC).date()
    await page.get_by_label("From", exact=True).fill((today - timedelta(days=1)).isoformat())
    await page.get_by_label("To (inclusive)").fill(today.isoformat())
    await page.get_by_role("button", name="Apply range").click()
    await expect(versions.locator("table.verdicts tbody th")).to_have_text(["V1", "Draft"])
    await expect(rows.nth(1)).to_contain_text("better")
    await expect(rows.nth(1)).to_contain_text("vs V1: automation +40.0 pts")
    assert f"from={today - timedelta(days=1)}" in page.url
    # A range that ends before it starts is refused where it was typed.
    await page.get_by_label("From", exact=True).fill(today.isoformat())
    await page.get_by_label("To (inclusive)").fill((today - timedelta(days=2)).isoformat())
    await page.get_by_role("button", name="Apply range").click()
    await expect(page.get_by_role("alert")).to_have_text("“From” must not be after “To”.")

    ab = page.get_by_role("region", name="A/B tests")
    await expect(ab.locator("table.verdicts tbody th")).to_have_text(
        ["control (V1, 80%)", "challenger (Draft, 20%)"]
    )
    # The labels and the rates with their intervals are drawn whole, not cut at either edge.
    texts = await _assert_no_chart_text_clipped(ab)
    assert "challenger (Draft, 20%)" in texts
    assert any(t.startswith("90% (") for t in texts)
    await _assert_no_chart_text_clipped(versions)
    rate_chart = ab.get_by_role("img", name="Automation rate by variant")
    await rate_chart.scroll_into_view_if_needed()
    await expect(rate_chart).to_be_visible()
    await console.screenshot()


async def test_analytics_trend_per_version(
    page: Page,
    pool: asyncpg.Pool,
    make_agent: AgentFactory,
    console: Console,
) -> None:
    """Needs GET /v1/analytics/timeseries (issue 15, built beside this console in another part):
    without it the section says "Trends unavailable" and this test fails."""
    agent = await make_agent(versions=2)
    today = datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0)
    for days_ago, version, automated in ((2, 1, 4), (1, 1, 6), (1, 2, 9), (0, 2, 3)):
        calls = [Outcome(automated=i < automated, duration_s=60.0) for i in range(10)]
        await insert_calls(
            pool, agent["id"], version, calls, started_at=today - timedelta(days=days_ago)
        )
    since = (today - timedelta(days=6)).date().isoformat()
    await console.sign_in(
        "viewer",
        f"/console/#/analytics?agent_id={agent['id']}&from={since}&to={today.date()}"
        "&metric=automation_rate",
    )
    trends = page.get_by_role("region", name="Trends by version")
    chart = trends.get_by_role("img", name="Automation rate by version over time")
    await expect(chart).to_be_visible()
    await expect(trends.locator(".legend li")).to_have_text(["V1", "V2"])
    await expect(chart.locator("path.line")).to_have_count(2)
    await expect(chart.locator("circle.dot")).to_have_count(4)
    await trends.get_by_text("Trend data").click()
    data = trends.locator("table.trend-data tbody tr")
    await expect(data).to_have_count(4)
    await expect(data.first).to_contain_text("40%")
    await _assert_no_chart_text_clipped(trends)
    await console.screenshot()

    await trends.get_by_label("Metric").select_option("calls")
    await expect(trends.get_by_role("img", name="Calls by version over time")).to_be_visible()
    assert "metric=calls" in page.url


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
        "scopes": None,
        "name": "editor-user",
        "role": "editor",
    }

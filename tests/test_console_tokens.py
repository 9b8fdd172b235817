"""The console's Tokens screen, driven in headless Chromium against the real admin app (the
browser, server and page fixtures of test_console.py)."""

from __future__ import annotations

from datetime import datetime, timedelta

from playwright.async_api import Page, expect

from store import tokens
from tests import test_console
from tests.conftest import AgentFactory, Api
from tests.test_console import Console

# The browser, the console's server and the page, as the console's other stories have them.
chromium, browser, console_url, page, console = (
    test_console.chromium,
    test_console.browser,
    test_console.console_url,
    test_console.page,
    test_console.console,
)


async def test_admin_creates_and_revokes_a_scoped_expiring_token(
    page: Page, api: Api, make_agent: AgentFactory, console: Console
) -> None:
    await make_agent(name="Billing bot")
    support = await make_agent(name="Support bot")
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    await console.sign_in("admin")
    await page.get_by_role("link", name="Tokens").click()
    await expect(page.get_by_role("heading", name="Tokens", level=1)).to_be_visible()
    form = page.get_by_role("form", name="New token")

    # The server's validation errors show at their fields and with their paths.
    await form.get_by_label("Name").fill("   ")
    await form.get_by_role("button", name="Create token").click()
    await expect(form.get_by_label("Name")).to_have_attribute("aria-invalid", "true")
    await expect(form.get_by_role("alert")).to_contain_text("name: must not be blank")
    await console.screenshot("-validation")

    await form.get_by_label("Name").fill("support-runtime")
    await form.get_by_label("Role").select_option("runtime")
    # The longest lifetime comes from the server's document, in the unit chosen.
    expires_in = form.get_by_label("Expires in")
    await expires_in.fill("99999")
    await form.get_by_label("Expiry unit").select_option(label="days")
    await form.get_by_role("button", name="Create token").click()
    max_days = tokens.MAX_EXPIRES_IN_S // 86400
    await expect(form.get_by_text(f"At most {max_days} days.")).to_be_visible()
    await expect(expires_in).to_be_focused()
    await expires_in.fill("2")
    await form.get_by_label("Support bot").check()
    await form.get_by_role("button", name="Create token").click()

    # The secret, once, with the warning and a working copy button.
    dialog = page.get_by_role("dialog", name="Token support-runtime created")
    await expect(dialog.get_by_text("Shown once.")).to_be_visible()
    await expect(dialog.locator("dd").nth(2)).to_have_text("Support bot")  # agents
    secret_box = dialog.get_by_label("Secret")
    await expect(secret_box).to_be_visible()
    secret = await secret_box.input_value()
    assert secret.startswith("agv_"), secret
    await dialog.get_by_role("button", name="Copy secret").click()
    await expect(dialog.get_by_text("Copied to the clipboard.")).to_be_visible()
    assert await page.evaluate("navigator.clipboard.readText()") == secret
    await console.screenshot("-secret")
    await dialog.get_by_role("button", name="I have copied it").click()
    await expect(dialog).to_have_count(0)

    # The list shows the token and what it may do, never its secret.
    [listed] = (await api.ok("GET", "/v1/tokens"))["items"][:1]
    assert (listed["name"], listed["role"], listed["scopes"]) == (
        "support-runtime",
        "runtime",
        [support["id"]],
    )
    lifetime = datetime.fromisoformat(listed["expires_at"]) - datetime.fromisoformat(
        listed["created_at"]
    )
    assert abs(lifetime - timedelta(days=2)) < timedelta(seconds=5), lifetime
    row = page.locator(f"tr[data-token-id='{listed['id']}']")
    await expect(row).to_be_visible()
    await expect(row.locator("td").nth(0)).to_have_text("runtime")
    await expect(row.get_by_role("link", name="Support bot")).to_be_visible()
    await expect(row.locator("td").nth(3)).not_to_have_text("never")
    await expect(row.get_by_text("active")).to_be_visible()
    await expect(row.locator("td").nth(4)).to_have_text("never")  # last used
    assert secret not in await page.content()
    # The secret works, within its scope, until revoked.
    bearer = {"Authorization": f"Bearer {secret}"}
    whoami = await api.call("GET", "/v1/whoami", role=None, headers=bearer)
    assert (whoami.status, (await whoami.json())["scopes"]) == (200, [support["id"]])
    await console.screenshot("-listed")

    revoke = row.get_by_role("button", name=f"Revoke support-runtime (#{listed['id']})")
    await revoke.click()
    confirm = page.get_by_role("dialog", name="Revoke support-runtime?")
    await expect(confirm).to_contain_text("This cannot be undone.")
    await confirm.get_by_role("button", name="Cancel").click()
    await expect(row.get_by_text("active")).to_be_visible()
    await revoke.click()
    await confirm.get_by_role("button", name="Revoke").click()
    await expect(row.get_by_text("revoked", exact=True)).to_be_visible()
    await expect(row.get_by_role("button", name="Revoke")).to_have_count(0)
    await console.screenshot()
    assert (await api.call("GET", "/v1/whoami", role=None, headers=bearer)).status == 401


async def test_only_unscoped_admins_see_tokens(
    page: Page, api: Api, make_agent: AgentFactory, console: Console
) -> None:
    await console.sign_in("viewer")
    await expect(page.get_by_role("link", name="Agents")).to_be_visible()
    await expect(page.get_by_role("link", name="Tokens")).to_be_hidden()
    # Typing the address shows why, not the screen.
    await page.goto("/console/#/tokens")
    await expect(page.get_by_text("Managing tokens needs the admin role")).to_be_visible()
    await expect(page.get_by_text("you are signed in as viewer")).to_be_visible()
    await expect(page.get_by_role("form", name="New token")).to_have_count(0)
    await expect(page.get_by_role("table")).to_have_count(0)
    await console.screenshot()

    # An admin token limited to some agents cannot manage tokens (the API says 403) either.
    agent = await make_agent()
    scoped = await api.ok(
        "POST", "/v1/tokens", 201, json={"name": "team", "role": "admin", "scopes": [agent["id"]]}
    )
    await page.get_by_role("button", name="Sign out").click()
    await page.get_by_label("Admin API token").fill(scoped["token"])
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_text("team · admin")).to_be_visible()
    await expect(page.get_by_role("link", name="Tokens")).to_be_hidden()

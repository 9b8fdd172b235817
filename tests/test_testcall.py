"""`python -m router call` against a real router process: a signed call of each provider, the
call id and version it prints landing as the call's record; an unconfigured provider's 403."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.net import free_port
from router.testcall import development_secrets
from store.settings import Settings
from tests.conftest import AgentFactory, Api
from tests.router_fixtures import CALLER, CHANNEL
from tests.test_serve import START_TIMEOUT_S, Servers, server_env, servers, wait_serving

__all__ = ["servers"]  # the fixture, imported for this module's tests


def call(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (fixed arguments)
        [sys.executable, "-m", "router", "call", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        check=False,
    )


def write_env_file(path: Path, values: dict[str, str]) -> Path:
    path.write_text("# written by the test\n\n" + "".join(f"{k}={v}\n" for k, v in values.items()))
    return path


@pytest.mark.parametrize("provider", ["twilio", "telnyx", "generic"])
async def test_a_test_call_prints_the_call_id_and_the_version_served(
    provider: str,
    settings: Settings,
    tmp_path: Path,
    servers: Servers,
    make_pinned_agent: AgentFactory,
    api: Api,
) -> None:
    agent = await make_pinned_agent(versions=2, pinned=2)
    port = free_port()
    secrets = development_secrets()
    # Telnyx commands go to a stand-in the call command runs on a port of this test's own.
    secrets["AGENTVER_TELNYX_API_BASE"] = f"http://127.0.0.1:{free_port()}/v2"
    env = server_env(settings, tmp_path, port, **secrets)
    wait_serving(servers.start(["router", "--workers", "1"], env, "router"), port)

    # The secrets come from the env file (as make run writes it), not the environment.
    bare = server_env(settings, tmp_path, port, TWILIO_AUTH_TOKEN="")
    env_file = write_env_file(tmp_path / "dev.env", secrets)
    run = call(
        bare, "--env-file", str(env_file), "--provider", provider, "--to", CHANNEL,
        "--from", CALLER, "--url", f"http://127.0.0.1:{port}",
    )  # fmt: skip

    assert run.returncode == 0, (run.stdout, run.stderr)
    lines = run.stdout.splitlines()
    assert lines[0] == f"{provider} call answered 200: served version 2 of agent {agent['id']}"
    call_id = lines[1].removeprefix("  call id:     ")
    assert lines[2] == "  version:     2"
    assert lines[4] == "answer:"
    calls = await api.ok("GET", f"/v1/calls?agent_id={agent['id']}")
    recorded = [(c["call_id"], c["provider"], c["version"]) for c in calls["items"]]
    assert recorded == [(call_id, provider, 2)]


async def test_an_unconfigured_provider_gets_403_saying_so_and_the_log_names_the_variable(
    settings: Settings, tmp_path: Path, servers: Servers, make_pinned_agent: AgentFactory
) -> None:
    await make_pinned_agent(versions=1, pinned=1)
    port = free_port()
    secrets = development_secrets()
    router_env = server_env(settings, tmp_path, port, TWILIO_AUTH_TOKEN="")
    wait_serving(servers.start(["router", "--workers", "1"], router_env, "router"), port)

    caller_env = server_env(settings, tmp_path, port, **secrets)
    run = call(caller_env, "--to", CHANNEL, "--from", CALLER, "--url", f"http://127.0.0.1:{port}")

    assert run.returncode == 1
    assert run.stdout.splitlines()[:2] == ["twilio call refused: 403", "answer:"]
    body = run.stdout.splitlines()[2]
    assert '"code": "provider_not_configured"' in body
    assert "twilio webhooks are not configured on this server" in body
    log = servers.log("router")
    assert '"set_variable": "TWILIO_AUTH_TOKEN"' in log
    assert '"event": "webhook_rejected"' in log


def test_a_call_without_the_secret_to_sign_it_says_which_variable_to_set(
    settings: Settings, tmp_path: Path
) -> None:
    env = server_env(settings, tmp_path, free_port(), TWILIO_AUTH_TOKEN="")
    run = call(env, "--to", CHANNEL, "--from", CALLER)
    assert (run.returncode, run.stdout) == (2, "")
    assert "set TWILIO_AUTH_TOKEN" in run.stderr

    run = call(env, "--provider", "telnyx", "--to", CHANNEL, "--from", CALLER)
    assert "set AGENTVER_TELNYX_SIGNING_KEY" in run.stderr


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("TWILIO_AUTH_TOKEN\n", "dev.env:1: not a KEY=VALUE line"),
        ("# fine\n=value\n", "dev.env:2: not a KEY=VALUE line"),
        ("BAD NAME=1\n", "dev.env:1: not a KEY=VALUE line"),
        ("AGENTVER_TELNYX_SIGNING_KEY=%%%\n", "is not a base64 32-byte seed"),
    ],
)
def test_a_malformed_env_file_or_key_is_refused_with_its_line(
    content: str, error: str, settings: Settings, tmp_path: Path
) -> None:
    env_file = tmp_path / "dev.env"
    env_file.write_text(content)
    env = server_env(settings, tmp_path, free_port())
    run = call(env, "--env-file", str(env_file), "--provider", "telnyx", "--to", CHANNEL,
               "--from", CALLER)  # fmt: skip
    assert run.returncode == 2
    assert error in run.stderr


def test_a_telnyx_call_needs_the_call_control_api_on_this_machine(
    settings: Settings, tmp_path: Path
) -> None:
    secrets: dict[str, Any] = development_secrets()
    secrets["AGENTVER_TELNYX_API_BASE"] = "https://api.telnyx.com/v2"
    env = server_env(settings, tmp_path, free_port(), **secrets)
    run = call(env, "--provider", "telnyx", "--to", CHANNEL, "--from", CALLER)
    assert run.returncode == 2
    assert "a Telnyx test call needs it on this machine" in run.stderr

"""The example runtime (examples/twilio_runtime.py) end to end: a signed Twilio webhook to a real
router, its TwiML, then a websocket client speaking Twilio's Media Streams messages to the
runtime, which must load exactly the config the call was served."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType
from aiohttp.test_utils import TestServer

from agentver.client import AgentverClient
from examples.twilio_runtime import Stream, create_app
from harness.net import free_port
from tests.conftest import AgentFactory, Api
from tests.router_fixtures import RouterClient, RouterFactory, WebhooksTo

# 20 ms of µ-law silence at 8 kHz: what one Twilio media frame carries.
FRAME = b"\xff" * 160
FRAMES = 3


@dataclasses.dataclass
class RecordingPipeline:
    """The pipeline as a test sees it: what each stream started with, its audio, its stop."""

    started: list[Stream] = dataclasses.field(default_factory=list)
    received: bytearray = dataclasses.field(default_factory=bytearray)
    stopped: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    async def start(self, stream: Stream) -> None:
        self.started.append(stream)

    async def audio(self, stream: Stream, mulaw: bytes) -> None:
        self.received.extend(mulaw)

    async def stop(self, stream: Stream) -> None:
        self.stopped.set()


@dataclasses.dataclass
class Rig:
    router: RouterClient
    pipeline: RecordingPipeline
    call: Callable[[str], Awaitable[dict[str, str]]]


@pytest.fixture
async def rig(api: Api, start_router: RouterFactory, webhooks_to: WebhooksTo) -> AsyncIterator[Rig]:
    """A router whose TwiML streams to the example runtime, and the runtime itself."""
    port = free_port()
    router = await start_router(media_stream_url=f"ws://127.0.0.1:{port}/media")
    client = AgentverClient(
        router_url=str(router.make_url("")),
        admin_url=str(api.client.make_url("")),
        token=api.tokens["runtime"],
    )
    pipeline = RecordingPipeline()
    runtime = TestServer(create_app(client, pipeline), port=port)
    await runtime.start_server()
    yield Rig(router, pipeline, webhooks_to(router).twilio_call)
    await runtime.close()


def start_message(call_sid: str, parameters: dict[str, str]) -> dict[str, Any]:
    return {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": "AC" + "0" * 32,
            "streamSid": "MZ" + "1" * 32,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "customParameters": parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
        "streamSid": "MZ" + "1" * 32,
    }


def media_message(n: int) -> dict[str, Any]:
    return {
        "event": "media",
        "sequenceNumber": str(n + 2),
        "media": {
            "track": "inbound",
            "chunk": str(n + 1),
            "timestamp": str(20 * n),
            "payload": base64.b64encode(FRAME).decode(),
        },
        "streamSid": "MZ" + "1" * 32,
    }


async def stream_call(
    url: str, start: dict[str, Any], before: tuple[str, ...] = (), after: tuple[str, ...] = ()
) -> int | None:
    """Speak Twilio's side of a Media Stream to `url`, with frames `before` and `after` the
    start; the close code the runtime sent, if it closed first (None when it ended at `stop`)."""
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        for frame in before:
            await ws.send_str(frame)
        await ws.send_json(start)
        for frame in after:
            await ws.send_str(frame)
        for n in range(FRAMES):
            await ws.send_json(media_message(n))
        await ws.send_json(
            {
                "event": "stop",
                "sequenceNumber": str(FRAMES + 2),
                "stop": {"accountSid": start["start"]["accountSid"], "callSid": "CA-x"},
                "streamSid": start["streamSid"],
            }
        )
        message = await ws.receive()
        assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
        return None if ws.close_code == WSCloseCode.OK else ws.close_code


# Frames a runtime must shrug off: not JSON, not an object, audio before the start, audio that is
# not base64 or not the caller's; after the start, a second start naming another call.
NOISE = (
    "not json",
    "[]",
    json.dumps(media_message(0)),
    json.dumps(media_message(0) | {"media": {"payload": "***"}}),
    json.dumps(media_message(0) | {"media": {"track": "outbound", "payload": "/w=="}}),
)
SECOND_START = json.dumps(start_message("CA-other", {"call_id": "call_other"}))


async def test_the_runtime_loads_exactly_the_config_served(
    api: Api, make_pinned_agent: AgentFactory, rig: Rig
) -> None:
    agent = await make_pinned_agent(versions=2, pinned=2)
    version = await api.ok("GET", f"/v1/agents/{agent['id']}/versions/2")

    twiml = await rig.call("CA-example")
    parameters = {k: v for k, v in twiml.items() if k != "url"}
    start = start_message("CA-example", parameters)
    closed = await stream_call(twiml["url"], start, NOISE, (*NOISE[:2], *NOISE[3:], SECOND_START))

    assert closed is None
    await asyncio.wait_for(rig.pipeline.stopped.wait(), 5)
    [stream] = rig.pipeline.started
    served = await rig.router.get(
        f"/v1/calls/{parameters['call_id']}/config", headers=api.bearer("runtime")
    )
    assert stream.served.config == (await served.json())["config"] == version["config"]
    assert (stream.call_sid, stream.served.agent_id, stream.served.version_label) == (
        "CA-example",
        agent["id"],
        "2",
    )
    assert stream.served.config_hash == parameters["config_hash"] == version["config_hash"]
    assert bytes(rig.pipeline.received) == FRAME * FRAMES


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        ({"config_hash": "0" * 64}, WSCloseCode.POLICY_VIOLATION),
        ({"version": "1"}, WSCloseCode.POLICY_VIOLATION),
        ({"call_id": "call_unknown"}, WSCloseCode.POLICY_VIOLATION),
        ({"call_id": None}, WSCloseCode.POLICY_VIOLATION),
    ],
)
async def test_a_stream_naming_another_config_is_refused(
    make_pinned_agent: AgentFactory, rig: Rig, tamper: dict[str, Any], code: WSCloseCode
) -> None:
    await make_pinned_agent(versions=2, pinned=2)
    twiml = await rig.call("CA-tampered")
    parameters = {k: v for k, v in twiml.items() if k != "url"}

    closed = await stream_call(twiml["url"], start_message("CA-tampered", {**parameters, **tamper}))

    assert closed == code
    assert rig.pipeline.started == [] and rig.pipeline.received == bytearray()

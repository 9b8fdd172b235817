"""An example voice-agent runtime: the Twilio Media Streams websocket, wired to agentver.

The router answers an incoming call with TwiML `<Connect><Stream url=...>` whose `<Parameter>`s
name the call (`call_id`, `agent_id`, `version`, `config_hash`). Twilio then opens a websocket to
that url and sends `connected`, then `start` (those parameters under `start.customParameters`),
then `media` frames (base64 µ-law, 8 kHz) until `stop`. At `start` this runtime loads the exact
config the call was served (`agentver.client`), checks it is the one the parameters name, and
hands it to the voice pipeline; the pipeline here only logs what it would use (no STT, LLM or
TTS is called). README.md shows the same wiring in Pipecat.

    AGENTVER_ROUTER_URL=http://127.0.0.1:8080 AGENTVER_ADMIN_URL=http://127.0.0.1:8081 \\
    AGENTVER_RUNTIME_TOKEN=<a runtime token> python -m examples.twilio_runtime --port 8765

and set the router's `AGENTVER_MEDIA_STREAM_URL` to this server's public `wss://…/media`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from agentver.client import AgentverClient, AgentverError, ApiError, CallConfig

log = structlog.get_logger()


@dataclass(frozen=True)
class Stream:
    """One call's media stream, with the config its pipeline runs."""

    stream_sid: str
    call_sid: str
    served: CallConfig


class Pipeline(Protocol):
    """The voice pipeline (STT → LLM → TTS) a runtime feeds; one stream at a time per call."""

    async def start(self, stream: Stream) -> None: ...

    async def audio(self, stream: Stream, mulaw: bytes) -> None: ...

    async def stop(self, stream: Stream) -> None: ...


class LoggingPipeline:
    """Stands in for a real pipeline: logs the config it would run and how much audio came."""

    def __init__(self) -> None:
        self._bytes: dict[str, int] = {}

    async def start(self, stream: Stream) -> None:
        served = stream.served
        self._bytes[stream.stream_sid] = 0
        log.info(
            "voice_pipeline_start",
            call_id=served.call_id,
            agent_id=served.agent_id,
            version=served.version_label,
            config_hash=served.config_hash,
            config=served.config,
        )

    async def audio(self, stream: Stream, mulaw: bytes) -> None:
        self._bytes[stream.stream_sid] += len(mulaw)

    async def stop(self, stream: Stream) -> None:
        audio = self._bytes.pop(stream.stream_sid)
        log.info("voice_pipeline_stop", call_id=stream.served.call_id, audio_bytes=audio)


CLIENT = web.AppKey("client", AgentverClient)
PIPELINE = web.AppKey("pipeline", Pipeline)
# The stream parameters the router sets (docs/design.md, section 4).
PARAMETERS = ("call_id", "agent_id", "version", "config_hash")


class Refused(Exception):
    """A stream this runtime will not serve: its websocket is closed with `code`."""

    def __init__(self, code: WSCloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code


async def _served(client: AgentverClient, parameters: Any) -> CallConfig:
    """The config the call was served, checked against the stream's parameters: a stream that
    names another agent, version or config than its call was served is refused."""
    if not isinstance(parameters, dict) or not all(
        isinstance(parameters.get(name), str) for name in PARAMETERS
    ):
        raise Refused(WSCloseCode.POLICY_VIOLATION, "customParameters lack the call's")
    try:
        served = await client.call_config(parameters["call_id"])
    except ApiError as error:
        raise Refused(WSCloseCode.POLICY_VIOLATION, str(error)) from None
    # Unavailable or a config that fails its hash: nothing to serve now.
    except AgentverError as error:
        raise Refused(WSCloseCode.INTERNAL_ERROR, str(error)) from None
    named = {name: parameters[name] for name in PARAMETERS}
    got = {
        "call_id": served.call_id,
        "agent_id": served.agent_id,
        "version": served.version_label,
        "config_hash": served.config_hash,
    }
    if named != got:
        raise Refused(WSCloseCode.POLICY_VIOLATION, "parameters differ from the call's")
    return served


async def _start(app: web.Application, message: dict[str, Any]) -> Stream:
    start = message.get("start")
    if not isinstance(start, dict):
        raise Refused(WSCloseCode.POLICY_VIOLATION, "a start message without start")
    served = await _served(app[CLIENT], start.get("customParameters"))
    stream = Stream(str(start.get("streamSid")), str(start.get("callSid")), served)
    await app[PIPELINE].start(stream)
    return stream


def _audio(message: dict[str, Any]) -> bytes | None:
    """A media message's inbound audio; None for anything else (outbound echo, garbage)."""
    media = message.get("media")
    if not isinstance(media, dict) or media.get("track", "inbound") != "inbound":
        return None
    try:
        return base64.b64decode(str(media.get("payload")), validate=True)
    except binascii.Error:
        return None


async def media_stream(request: web.Request) -> web.WebSocketResponse:
    """One Twilio Media Stream: load the call's config at `start`, feed `media` to the
    pipeline, stop it at `stop` or when the socket closes."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    pipeline, stream = request.app[PIPELINE], None
    try:
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            try:
                message = json.loads(frame.data)
            except ValueError:
                continue
            event = message.get("event") if isinstance(message, dict) else None
            if event == "start" and stream is None:
                stream = await _start(request.app, message)
            elif event == "media" and stream is not None:
                audio = _audio(message)
                if audio is not None:
                    await pipeline.audio(stream, audio)
            elif event == "stop":
                break
    except Refused as refused:
        log.warning("media_stream_refused", reason=str(refused), path=request.path)
        await ws.close(code=refused.code, message=str(refused).encode()[:120])
    finally:
        if stream is not None:
            await pipeline.stop(stream)
    await ws.close()
    return ws


def create_app(client: AgentverClient, pipeline: Pipeline) -> web.Application:
    """The runtime: `GET /media` is the websocket Twilio streams each call to."""
    app = web.Application()
    app[CLIENT], app[PIPELINE] = client, pipeline

    async def close_client(app: web.Application) -> AsyncIterator[None]:
        yield
        await app[CLIENT].close()

    app.cleanup_ctx.append(close_client)
    app.router.add_get("/media", media_stream)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    client = AgentverClient(
        router_url=os.environ.get("AGENTVER_ROUTER_URL", "http://127.0.0.1:8080"),
        admin_url=os.environ.get("AGENTVER_ADMIN_URL", "http://127.0.0.1:8081"),
        token=os.environ["AGENTVER_RUNTIME_TOKEN"],
    )
    web.run_app(create_app(client, LoggingPipeline()), host=args.host, port=args.port)


if __name__ == "__main__":
    main()

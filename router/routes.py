"""The router's URL map."""

from __future__ import annotations

from aiohttp import web

from httpkit import fastlane, health, metrics_fanin, openapi
from router import views, webhooks

INFO = {
    "title": "agentver router",
    "description": "Provider webhooks that route calls, and the voice agents' runtime lookups.",
}


def setup_routes(app: web.Application) -> None:
    app.router.add_routes(
        [
            fastlane.route(
                app,
                "POST",
                "/webhooks/twilio/voice",
                webhooks.twilio_voice_lane,
                webhooks.twilio_voice,
            ),
            web.post("/webhooks/twilio/status", webhooks.twilio_status),
            web.post("/webhooks/telnyx", webhooks.telnyx_event),
            web.post("/webhooks/generic/call", webhooks.generic_call),
            web.post("/webhooks/generic/ended", webhooks.generic_ended),
            fastlane.route(
                app, "GET", "/v1/calls/{call_id}/config", views.call_config_lane, views.call_config
            ),
            web.get("/v1/configs/{config_hash}", views.config_blob),
            web.get("/v1/resolve", views.resolve),
            web.get("/metrics", metrics_fanin.metrics),
            web.get("/healthz", health.healthz),
            web.get("/readyz", views.readyz),
            web.get("/openapi.json", openapi.view(INFO)),
        ]
    )

"""The admin API's URL map."""

from __future__ import annotations

from aiohttp import web

from admin import analytics, calls, metrics, rollouts, views, webconsole
from httpkit import health, metrics_fanin, openapi

AGENT = "/v1/agents/{agent_id}"
VERSION = AGENT + r"/versions/{n:\d+}"
CHANNEL = "/v1/channels/{number}"
ROLLOUT = CHANNEL + "/rollouts/{rollout_id}"
INFO = {
    "title": "agentver admin",
    "description": "Agents, drafts, immutable versions, channel routing, calls, analytics.",
}


def setup_routes(app: web.Application) -> None:
    app.router.add_routes(
        [
            web.post("/v1/agents", views.create_agent),
            web.get("/v1/agents", views.list_agents),
            web.get(AGENT, views.get_agent),
            web.post(AGENT + "/archive", views.archive_agent),
            web.post(AGENT + "/unarchive", views.unarchive_agent),
            web.get(AGENT + "/draft", views.get_draft),
            web.put(AGENT + "/draft", views.put_draft),
            web.patch(AGENT + "/draft", views.patch_draft),
            web.post(AGENT + "/versions", views.publish),
            web.get(AGENT + "/versions", views.list_versions),
            web.get(VERSION, views.get_version),
            web.get(VERSION + "/diff", views.diff_version),
            web.post(VERSION + "/restore", views.restore),
            web.get("/v1/channels", views.list_channels),
            web.put(CHANNEL, views.put_channel),
            web.get(CHANNEL, views.get_channel),
            web.delete(CHANNEL, views.delete_channel),
            web.get(CHANNEL + "/guardrails", analytics.get_guardrails),
            web.put(CHANNEL + "/guardrails", analytics.put_guardrails),
            web.post(CHANNEL + "/rollouts", rollouts.start_rollout),
            web.get(CHANNEL + "/rollouts", rollouts.list_rollouts),
            web.post(ROLLOUT + "/pause", rollouts.pause),
            web.post(ROLLOUT + "/resume", rollouts.resume),
            web.post(ROLLOUT + "/abort", rollouts.abort),
            web.post(ROLLOUT + "/promote", rollouts.promote),
            web.get("/v1/calls", calls.list_calls),
            web.get("/v1/calls/export", calls.export_calls),
            web.get("/v1/calls/{call_id}", calls.get_call),
            web.post("/v1/calls/{call_id}/analysis", analytics.post_analysis),
            web.get("/v1/analytics/versions", analytics.versions),
            web.get("/v1/analytics/ab", analytics.ab),
            web.get("/v1/analytics/timeseries", analytics.timeseries),
            web.get("/metrics", metrics_fanin.metrics),
            web.get("/healthz", health.healthz),
            web.get("/readyz", metrics.readyz),
            web.get("/v1/audit", views.list_audit),
            web.post("/v1/tokens", views.create_token),
            web.get("/v1/tokens", views.list_tokens),
            web.post("/v1/tokens/{token_id}/revoke", views.revoke_token),
            web.get("/openapi.json", openapi.view(INFO)),
            web.get("/v1/whoami", views.whoami),
            web.get("/v1/resolve", views.resolve),
        ]
    )
    app.router.add_routes(webconsole.routes())

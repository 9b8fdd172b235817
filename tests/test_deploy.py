"""deploy/: the alert rules pass promtool's checks and their unit tests, the dashboard's queries
are valid PromQL, and every metric the dashboard and the rules name is in a real scrape of the
router and the admin service once calls went through them."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from agentver.client import AgentverClient
from tests.conftest import AgentFactory, Api
from tests.debian import debian_tool
from tests.router_fixtures import RouterClient, Webhooks
from tests.test_guardrails import AUTOMATED, FAILED, _ab_test, _analyse, _seed

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "agentver.json"
PROMTOOL = Path("/usr/bin/promtool")
# Metric names in a PromQL expression: ours and the process collector's. `up` is Prometheus's
# own, never in a scrape.
METRIC_NAME = re.compile(r"\b(?:agentver|process)_[a-z_]+\b")
# What Grafana substitutes before a query runs.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$agent": ".*"}


@pytest.fixture(scope="session")
def promtool() -> str:
    """Debian's promtool (in its prometheus package), installed with apt-get when missing."""
    return debian_tool(PROMTOOL, "prometheus")


def run(promtool: str, *args: str | Path) -> str:
    """promtool's output; fails the test with it when promtool does."""
    done = subprocess.run(  # noqa: S603 (our own files)
        [promtool, *map(str, args)], capture_output=True, text=True, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    print(output)  # the closing note quotes it (pytest -s)
    return output


def dashboard_queries() -> list[str]:
    """Every query of the dashboard (and its variable), as Prometheus would receive it."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    queries += [v["definition"] for v in dashboard["templating"]["list"]]
    substituted = []
    for query in queries:
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        substituted.append(query)
    return substituted


def rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def rule_expressions() -> list[str]:
    return [rule["expr"] for rule in rules()]


def test_alert_rules_pass_promtool_and_their_unit_tests(promtool: str) -> None:
    assert f"SUCCESS: {len(rules())} rules found" in run(promtool, "check", "rules", RULES)
    assert "SUCCESS" in run(promtool, "test", "rules", RULE_TESTS)
    # Every alert is shown firing in its unit tests, not only loaded.
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    assert fired == {rule["alert"] for rule in rules()}
    assert "SUCCESS: 1 rule files found" in run(
        promtool, "check", "config", DEPLOY / "prometheus.yml"
    )


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    # label_values() is Grafana's, not PromQL: its argument is the series selector checked.
    queries = [re.sub(r"label_values\((\w+), \w+\)", r"\1", q) for q in dashboard_queries()]
    # promtool parses a recording rule's expression as Prometheus would the query.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{n}", "expr": q} for n, q in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML

    assert f"SUCCESS: {len(queries)} rules found" in run(promtool, "check", "rules", path)


async def test_every_metric_named_is_in_a_real_scrape(
    api: Api, router: RouterClient, calls_of_every_kind: None
) -> None:
    exported = set()
    for scrape in (await router.get("/metrics"), await api.call("GET", "/metrics", role=None)):
        assert scrape.status == 200
        families = text_string_to_metric_families(await scrape.text())
        exported |= {sample.name for family in families for sample in family.samples}
    named = {
        name
        for query in [*dashboard_queries(), *rule_expressions()]
        for name in METRIC_NAME.findall(query)
    }

    assert named - exported == set()
    # Among them those whose series only an ended, analysed or guardrail-tripping call makes.
    assert {
        "agentver_call_duration_seconds_bucket",
        "agentver_calls_automated_total",
        "agentver_call_sentiment_total",
        "agentver_guardrail_trips_total",
        "process_cpu_seconds_total",
        "process_open_fds",
    } <= named


@pytest.fixture
async def calls_of_every_kind(
    api: Api,
    pool: asyncpg.Pool,
    make_pinned_agent: AgentFactory,
    make_agent: AgentFactory,
    router: RouterClient,
    webhooks: Webhooks,
) -> None:
    """A routed call that ends and is analysed, a fallback, a rejected webhook, a guardrail
    trip: what makes each labelled series of the dashboard and the rules exist."""
    await make_pinned_agent(versions=1, pinned=1)
    call = await webhooks.twilio_call("CA-deploy")
    ended = {"CallSid": "CA-deploy", "CallStatus": "completed", "CallDuration": "42"}
    assert (await webhooks.twilio("/webhooks/twilio/status", ended)).status == 204
    unknown = {"CallSid": "CA-unknown", "From": "+12125550123", "To": "+14155550999"}
    assert (await webhooks.twilio("/webhooks/twilio/voice", unknown)).status == 200
    forged = await webhooks.twilio("/webhooks/twilio/voice", unknown, signature="forged")
    assert forged.status == 403
    async with AgentverClient(
        router_url=str(router.make_url("")),
        admin_url=str(api.client.make_url("")),
        token=api.tokens["runtime"],
    ) as client:
        await client.post_analysis(call["call_id"], sentiment="negative", automated=True)
    agent_id = await _ab_test(api, make_agent)
    await _seed(pool, agent_id, "control", [AUTOMATED] * 40, pending=0)
    [pending] = await _seed(pool, agent_id, "treatment", [FAILED] * 29, pending=1)
    await _analyse(api, pending, automated=False)


def test_compose_pins_images_checks_health_and_provisions_grafana() -> None:
    compose = yaml.safe_load((DEPLOY.parent / "docker-compose.yml").read_text())
    services = compose["services"]

    images = [s["image"] for s in services.values() if "build" not in s]
    assert all(re.search(r":v?\d+\.\d+", image) for image in images), images
    assert {"healthcheck"} <= services["router"].keys() & services["admin"].keys()
    assert services["router"]["command"] == ["router", "--workers", "2"]
    mounts = [v.split(":")[0] for s in ("prometheus", "grafana") for v in services[s]["volumes"]]
    assert [m for m in mounts if m.startswith("./") and not (DEPLOY.parent / m).exists()] == []

from tests.conftest import AgentFactory, Api


async def test_publish_round_trip(api: Api, make_agent: AgentFactory) -> None:
    agent = await make_agent(versions=2)
    history = await api.ok("GET", f"/v1/agents/{agent['id']}/versions")
    assert [v["version"] for v in history["items"]] == [2, 1]
    diff = await api.ok("GET", f"/v1/agents/{agent['id']}/versions/1/diff?against=2")
    assert diff["summary"][0]["section"] == "prompt"
    await api.ok("PUT", "/v1/channels/+14155550100", json={"agent_id": agent["id"], "version": 1})

"""Pure functions of the core: validation, canonical hashing, diffs and merge patches."""

from __future__ import annotations

import copy
import random
from typing import Any

import jsonpatch
import pytest

from store.config import canonical_json, config_hash, validate_config
from store.diff import diff_configs, merge_patch
from store.errors import InvalidConfig
from tests.conftest import minimal_config


def test_defaults_are_filled_in() -> None:
    config = validate_config(minimal_config())
    assert config["welcome_message"] == ""
    assert config["tools"] == [] and config["knowledge_bases"] == []
    assert config["workflow"] is None
    assert config["llm"] == {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "temperature": 0.7,
        "max_tokens": 1024,
    }
    assert config["background_sound"] == {"enabled": False, "sound": None, "volume": 0.5}


def test_equal_configs_hash_equally() -> None:
    terse = minimal_config()
    filled = validate_config(terse)
    reordered = dict(reversed(list(filled.items())))
    reordered["llm"] = dict(reversed(list(filled["llm"].items())))
    integer_temperature = minimal_config(llm={"provider": "openai", "model": "gpt-4o-mini"})
    integer_temperature["llm"]["temperature"] = 1
    float_temperature = copy.deepcopy(integer_temperature)
    float_temperature["llm"]["temperature"] = 1.0

    digest = config_hash(validate_config(terse))
    assert config_hash(validate_config(filled)) == digest
    assert config_hash(validate_config(reordered)) == digest
    assert config_hash(validate_config(integer_temperature)) == config_hash(
        validate_config(float_temperature)
    )
    assert config_hash(validate_config(minimal_config(welcome_message="Hi"))) != digest


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"llm": {"provider": "openai", "model": "m", "temperature": 3}}, "llm.temperature"),
        ({"llm": {"provider": "openai", "model": "m", "temperture": 1}}, "llm.temperture"),
        ({"voice": {"tts_provider": "x"}}, "voice.tts_voice"),
        ({"tools": [{"name": "a", "type": "t"}, {"name": "b"}]}, "tools[1].type"),
        ({"tools": [{"name": "a", "type": "t"}, {"name": "a", "type": "t"}]}, "tools"),
        (
            {"call_analysis": {"fields": [{"name": "x", "type": "date"}]}},
            "call_analysis.fields[0].type",
        ),
        ({"system_prompt": 5}, "system_prompt"),
        ({"unknown_field": 1}, "unknown_field"),
        ({"name": ""}, "name"),
        ({"name": "bad\x07name"}, "name"),
        (
            {"tools": [{"name": "a", "type": "t", "parameters": {"k\x00": 1}}]},
            "tools[0].parameters.k\x00",
        ),
        ({"llm": {"provider": "openai", "model": "m", "max_tokens": "10"}}, "llm.max_tokens"),
    ],
)
def test_invalid_config_names_the_field_path(raw: dict[str, Any], path: str) -> None:
    with pytest.raises(InvalidConfig) as caught:
        validate_config(minimal_config(**raw))
    assert path in [d["path"] for d in caught.value.details]


def test_missing_required_fields_are_all_named() -> None:
    with pytest.raises(InvalidConfig) as caught:
        validate_config({})
    paths = {d["path"] for d in caught.value.details}
    assert paths == {"name", "system_prompt", "llm", "voice"}


def test_a_config_must_be_an_object() -> None:
    with pytest.raises(InvalidConfig) as caught:
        validate_config(["not", "an", "object"])
    assert caught.value.details == [{"path": "$", "message": "expected an object"}]


# RFC 7396, appendix A: target, patch, result.
RFC_7396_EXAMPLES: list[tuple[Any, Any, Any]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC_7396_EXAMPLES)
def test_merge_patch_follows_rfc_7396(target: Any, patch: Any, result: Any) -> None:
    before = copy.deepcopy(target)
    assert merge_patch(target, patch) == result
    assert target == before  # the target is not modified in place


def test_diff_groups_changes_by_section_in_reading_order() -> None:
    before = validate_config(minimal_config())
    after = validate_config(
        minimal_config(
            name="Sales bot",
            welcome_message="Hello!",
            llm={"provider": "openai", "model": "gpt-4o", "temperature": 0.2},
            tools=[{"name": "lookup", "type": "webhook"}],
            workflow={"start": "greet"},
        )
    )
    diff = diff_configs(before, after)
    assert diff["summary"] == [
        {"section": "name", "changes": ['name: "Support bot" → "Sales bot"']},
        {"section": "prompt", "changes": ['welcome_message: "" → "Hello!"']},
        {
            "section": "llm",
            "changes": ['llm.model: "gpt-4o-mini" → "gpt-4o"', "llm.temperature: 0.7 → 0.2"],
        },
        {
            "section": "tools",
            "changes": [
                'tools.0 added: {"name": "lookup", "type": "webhook", "description": "", '
                '"parameters": {}}'
            ],
        },
        {"section": "workflow", "changes": ['workflow: null → {"start": "greet"}']},
    ]
    assert jsonpatch.apply_patch(before, diff["patch"]) == after


def test_diff_of_equal_configs_is_empty() -> None:
    config = validate_config(minimal_config())
    assert diff_configs(config, copy.deepcopy(config)) == {"patch": [], "summary": []}


def test_diff_summarises_long_values_by_size() -> None:
    before = validate_config(minimal_config())
    after = validate_config(minimal_config(system_prompt="x" * 500))
    [change] = diff_configs(before, after)["summary"][0]["changes"]
    assert change.endswith("(502 chars)")


def test_diff_describes_edits_after_a_removal_shifted_the_list() -> None:
    # The old values sit at indices the earlier ops of the patch moved: reading them from the
    # untouched `before` named the wrong tool, or failed outright.
    tools = [{"name": f"t{i}", "type": "webhook", "description": f"d{i}"} for i in range(3)]
    before = validate_config(minimal_config(tools=tools))
    after = validate_config(minimal_config(tools=[{**tools[2], "description": "new"}]))
    diff = diff_configs(before, after)
    assert jsonpatch.apply_patch(before, diff["patch"]) == after
    assert diff["summary"][0]["section"] == "tools"


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.4:
        return rng.choice([0, 1, "a", "b/c", "~d", None, True, 2.5])
    if roll < 0.7:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice("ab/~."): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def _shuffled_tools(rng: random.Random) -> list[dict[str, Any]]:
    return [
        {"name": f"t{i}", "type": "webhook", "description": rng.choice(["", "x"])}
        | ({"parameters": {"p": _random_json(rng)}} if rng.random() < 0.5 else {})
        for i in rng.sample(range(6), rng.randint(0, 5))
    ]


def test_diff_patch_always_turns_before_into_after() -> None:
    rng = random.Random(7)
    for _ in range(100):
        before = validate_config(
            minimal_config(tools=_shuffled_tools(rng), workflow={"w": _random_json(rng)})
        )
        after = validate_config(
            minimal_config(tools=_shuffled_tools(rng), workflow={"w": _random_json(rng)})
        )
        diff = diff_configs(before, after)
        # Canonical JSON, not ==: Python holds 1 == 1.0 == True, JSON (and the hash) do not.
        assert canonical_json(jsonpatch.apply_patch(before, diff["patch"])) == canonical_json(after)
        assert [s["section"] for s in diff["summary"]] == [
            s
            for s in ("tools", "workflow")
            if canonical_json(before[s]) != canonical_json(after[s])
        ]

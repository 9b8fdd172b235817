"""Differences between two configurations: an RFC 6902 patch and a readable summary."""

from __future__ import annotations

import json
from typing import Any

import jsonpatch

# Summary sections in the order a reviewer reads them; each top-level field maps to one.
SECTIONS: dict[str, str] = {
    "name": "name",
    "system_prompt": "prompt",
    "welcome_message": "prompt",
    "llm": "llm",
    "voice": "voice",
    "turn_taking": "turn-taking",
    "background_sound": "background sound",
    "tools": "tools",
    "knowledge_bases": "knowledge bases",
    "call_analysis": "analysis",
    "workflow": "workflow",
}
SECTION_ORDER = list(dict.fromkeys(SECTIONS.values()))
# Long values (prompts) are summarised by size rather than quoted whole.
MAX_QUOTED_CHARS = 80


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    if len(text) <= MAX_QUOTED_CHARS:
        return text
    return f"{text[: MAX_QUOTED_CHARS - 1]}… ({len(text)} chars)"


def _unescape(segment: str) -> str:
    return segment.replace("~1", "/").replace("~0", "~")


def _dotted(pointer: str) -> str:
    return ".".join(_unescape(p) for p in pointer.lstrip("/").split("/"))


def _describe(op: dict[str, Any], before: dict[str, Any]) -> str:
    path = _dotted(op["path"])
    if op["op"] in ("move", "copy"):
        return f"{path} {op['op']}d from {_dotted(op['from'])}"
    if op["op"] == "remove":
        return f"{path} removed"
    if op["op"] == "add":
        return f"{path} added: {_show(op['value'])}"
    old: Any = before
    for segment in op["path"].lstrip("/").split("/"):
        key = _unescape(segment)
        old = old[int(key)] if isinstance(old, list) else old[key]
    return f"{path}: {_show(old)} → {_show(op['value'])}"


def diff_configs(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """`{"patch": [...], "summary": [{"section", "changes": [...]}]}` turning before into after.

    The patch is built section by section so that the summary groups cleanly; applied in
    order it still turns `before` into `after`.
    """
    ops = [
        op
        for key in SECTIONS
        for op in jsonpatch.make_patch({key: before.get(key)}, {key: after.get(key)}).patch
    ]
    grouped: dict[str, list[str]] = {}
    for op in ops:
        section = SECTIONS[_unescape(op["path"].lstrip("/").split("/")[0])]
        grouped.setdefault(section, []).append(_describe(op, before))
    summary = [{"section": s, "changes": grouped[s]} for s in SECTION_ORDER if s in grouped]
    return {"patch": ops, "summary": summary}


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7396 JSON merge patch: objects merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged

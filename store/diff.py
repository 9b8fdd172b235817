"""Differences between two configurations: an RFC 6902 patch and a readable summary."""

from __future__ import annotations

import copy
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
# Top-level fields this module does not know (a newer schema's) still show, last.
OTHER_SECTION = "other"
SECTION_ORDER = [*dict.fromkeys(SECTIONS.values()), OTHER_SECTION]
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


def _describe(op: dict[str, Any], document: Any) -> str:
    """One line for `op`, about to be applied to `document`."""
    path = _dotted(op["path"])
    if op["op"] in ("move", "copy"):
        return f"{path} {op['op']}d from {_dotted(op['from'])}"
    if op["op"] == "remove":
        return f"{path} removed"
    if op["op"] == "add":
        return f"{path} added: {_show(op['value'])}"
    old = jsonpatch.JsonPointer(op["path"]).resolve(document)
    return f"{path}: {_show(old)} → {_show(op['value'])}"


def _describe_all(ops: list[dict[str, Any]], before: dict[str, Any]) -> list[str]:
    # Each op's path refers to the document as the ops before it left it (a removal shifts list
    # indices), so the old value is read from a copy the ops are replayed on.
    document = copy.deepcopy(before)
    lines = []
    for op in ops:
        lines.append(_describe(op, document))
        document = jsonpatch.apply_patch(document, [op], in_place=True)
    return lines


def diff_configs(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """`{"patch": [...], "summary": [{"section", "changes": [...]}]}` turning before into after.

    The patch is built section by section so that the summary groups cleanly; applied in
    order it still turns `before` into `after`.
    """
    keys_of: dict[str, list[str]] = {}
    for key in sorted(before.keys() | after.keys()):
        keys_of.setdefault(SECTIONS.get(key, OTHER_SECTION), []).append(key)
    patch: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    for section in SECTION_ORDER:
        # Sections hold disjoint keys, so each one's ops apply independently of the others'.
        old = {k: before[k] for k in keys_of.get(section, []) if k in before}
        new = {k: after[k] for k in keys_of.get(section, []) if k in after}
        ops: list[dict[str, Any]] = jsonpatch.make_patch(old, new).patch
        if ops:
            patch.extend(ops)
            summary.append({"section": section, "changes": _describe_all(ops, old)})
    return {"patch": patch, "summary": summary}


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

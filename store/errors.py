"""Domain errors raised by the store; each service maps them to JSON HTTP errors in one place."""

from __future__ import annotations

from typing import Any


class StoreError(Exception):
    """Base of every domain error; `code` is the stable machine-readable name."""

    code = "error"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(StoreError):
    code = "not_found"


class AgentNotFound(NotFound):
    code = "agent_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class ChannelNotFound(NotFound):
    code = "channel_not_found"


class CallNotFound(NotFound):
    code = "call_not_found"


class ConfigNotFound(NotFound):
    code = "config_not_found"


class InvalidConfig(StoreError):
    """The configuration (or another request document) breaks the schema; details list paths."""

    code = "invalid_config"


class InvalidRouting(StoreError):
    code = "invalid_routing"


class RevisionConflict(StoreError):
    """An If-Match revision no longer matches the draft."""

    code = "revision_conflict"


class Conflict(StoreError):
    code = "conflict"


class DraftUnchanged(Conflict):
    """Publishing would repeat the latest version."""

    code = "draft_unchanged"


class AgentInUse(Conflict):
    """An agent that channels route to cannot be archived."""

    code = "agent_in_use"

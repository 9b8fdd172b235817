"""What the admin API answers, and its path and query parameters, as pydantic models that the
OpenAPI document is generated from (request bodies: store/schemas.py). Handlers build plain
JSON; tests check that real answers satisfy these."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from httpkit.openapi import Shape
from store import channels
from store.numbers import E164
from store.pagination import DEFAULT_LIMIT, MAX_LIMIT
from store.schemas import EXAMPLE_NUMBER, Rule, Sentiment, Variant
from store.timeseries import Interval, Metric
from store.tokens import Role

Hash = Annotated[str, Field(pattern="^[0-9a-f]{64}$", description="SHA-256 of canonical JSON")]
Number = Annotated[str, Field(pattern=E164.pattern, examples=[EXAMPLE_NUMBER])]
Revision = Annotated[int, Field(ge=1)]
VersionNumber = Annotated[int, Field(ge=1)]


# --- parameters ------------------------------------------------------------------------------


class AgentPath(Shape):
    agent_id: str = Field(description="the agent's id")


class VersionPath(AgentPath):
    n: VersionNumber = Field(description="a version number")


class ChannelPath(Shape):
    number: Number = Field(description="the channel's number in E.164")


class CallPath(Shape):
    call_id: str = Field(description="the call's id")


class PageQuery(Shape):
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="page size")
    cursor: str | None = Field(None, description="next_cursor of the previous page (same filters)")


class ChannelsQuery(PageQuery):
    agent_id: str | None = Field(None, description="only channels routing to this agent")


class AuditQuery(PageQuery):
    agent_id: str | None = Field(None, description="entries about this agent")
    channel: str | None = Field(None, description="entries about this number")
    action: str | None = Field(None, description="e.g. version.publish, channel.pin")


class DiffQuery(Shape):
    against: str = Field(
        default="draft", pattern="^(draft|[0-9]{1,9})$", description="a version number, or `draft`"
    )


class WindowQuery(Shape):
    since: datetime | None = Field(None, description="from this time (inclusive)")
    until: datetime | None = Field(None, description="to this time (exclusive)")


class CallFilterQuery(WindowQuery):
    agent_id: str | None = Field(None, description="served by this agent")
    version: str | None = Field(None, description="a version number, or `draft`")
    variant: str | None = Field(None, description="variant label")
    channel: Number | None = Field(None, description="the number called")
    status: str | None = Field(None, description="the provider's last status, e.g. `completed`")
    sentiment: Sentiment | None = Field(None, description="analysed")
    automated: bool | None = Field(None, description="analysed as fully automated")


class CallsQuery(CallFilterQuery, PageQuery):
    pass


# The export's formats: CSV (a header row, then a row per call) or NDJSON (a call per line).
ExportFormat = Literal["csv", "ndjson"]


class CallsExportQuery(CallFilterQuery):
    format: ExportFormat | None = Field(
        None,
        description="`csv` or `ndjson`; without it, `application/x-ndjson` in Accept asks for "
        "NDJSON, anything else gets CSV",
    )


class VersionsReportQuery(WindowQuery):
    agent_id: str = Field(description="the agent")
    channel: Number | None = Field(None, description="only calls to this number")
    baseline: VersionNumber | None = Field(None, description="the version others are compared with")
    split_draft: bool | None = Field(None, description="one group per draft revision")


class AbReportQuery(WindowQuery):
    channel: Number = Field(description="the number")
    baseline: str | None = Field(None, description="the variant label others are compared with")


class TimeseriesQuery(WindowQuery):
    agent_id: str = Field(description="the agent")
    metric: Metric = Field(description="what each point measures")
    interval: Interval = Field(default="day", description="one point per UTC hour or day")


class IfMatch(Shape):
    if_match: str | None = Field(
        None,
        alias="If-Match",
        description='The ETag of the draft or channel this edit is based on ("3"); 412 when stale',
    )


# --- resources -------------------------------------------------------------------------------


class DraftSummary(Shape):
    revision: Revision
    config_hash: Hash
    updated_at: datetime
    updated_by: str


class Draft(DraftSummary):
    config: dict[str, Any] = Field(description="the AgentConfig, every default filled in")


class Agent(Shape):
    id: str
    name: str
    created_at: datetime
    draft: Draft
    latest_version: VersionNumber | None


class VersionSummary(Shape):
    agent_id: str
    version: VersionNumber
    name: str
    description: str
    author: str
    published_at: datetime
    config_hash: Hash


class Version(VersionSummary):
    config: dict[str, Any] = Field(description="the AgentConfig snapshot")


class Channel(Shape):
    number: Number
    sticky: channels.Sticky
    revision: Revision
    variants: list[Variant]
    updated_at: datetime
    updated_by: str


class AuditEntry(Shape):
    id: int
    at: datetime
    actor: str
    action: str = Field(examples=["version.publish", "channel.weights"])
    agent_id: str | None
    channel: str | None
    before: Any
    after: Any


class Call(Shape):
    call_id: str
    provider: str
    provider_call_id: str
    channel: str
    from_: str = Field(alias="from")
    agent_id: str
    version: VersionNumber | None = Field(description="null when the draft was served")
    draft_revision: Revision | None
    config_hash: Hash
    variant: str
    status: str
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None = Field(ge=0)
    sentiment: Sentiment | None
    automated: bool | None
    analysis: dict[str, Any] | None = Field(None, description="as posted; null until then")


class DiffVersion(Shape):
    version: VersionNumber


class DiffDraft(Shape):
    draft: Literal[True]
    revision: Revision


class PatchOperation(Shape):
    op: Literal["add", "remove", "replace", "move", "copy", "test"]
    path: str
    value: Any = None
    from_: str | None = Field(None, alias="from")


class SectionChanges(Shape):
    section: str
    changes: list[str]


class Diff(Shape):
    agent_id: str
    from_: DiffVersion = Field(alias="from")
    to: DiffVersion | DiffDraft
    patch: list[PatchOperation] = Field(description="RFC 6902 JSON Patch turning `from` into `to`")
    summary: list[SectionChanges]


class AgentList(Shape):
    items: list[Agent]
    next_cursor: str | None


class History(Shape):
    draft: DraftSummary
    items: list[VersionSummary]
    next_cursor: str | None


class ChannelList(Shape):
    items: list[Channel]
    next_cursor: str | None


class AuditList(Shape):
    items: list[AuditEntry]
    next_cursor: str | None


class CallList(Shape):
    items: list[Call]
    next_cursor: str | None


class Principal(Shape):
    name: str
    role: Role


class NewToken(Principal):
    token: str = Field(description="the secret, shown this once")


class Guardrails(Shape):
    number: Number
    rules: list[Rule]
    updated_at: datetime | None
    updated_by: str | None


ReportItem = Annotated[
    dict[str, Any],
    Field(
        description="One group's outcomes: calls, duration, sentiment and automation rate with "
        "confidence intervals, and the comparison with the baseline"
    ),
]


class ReportWindow(Shape):
    """The calls a report counts: those started in [since, until), the query's bounds widened
    to whole UTC hours (null: unbounded)."""

    since: datetime | None
    until: datetime | None
    rounded_to: Literal["hour"]


class PercentileError(Shape):
    """How far a duration percentile may be from the exact one (a merged histogram of
    log-spaced buckets): `relative` for durations from 1 s to `up_to_s`, `absolute_below_1s`
    seconds under 1 s."""

    relative: float
    absolute_below_1s: float
    up_to_s: int


class VersionsReport(BaseModel):
    agent_id: str
    since: str | None = None
    until: str | None = None
    channel: str | None = None
    baseline: VersionNumber | None = None
    split_draft: bool = False
    window: ReportWindow
    percentile_error: PercentileError
    items: list[ReportItem]


class AbReport(BaseModel):
    channel: Number
    since: str | None = None
    until: str | None = None
    baseline: str | None = None
    window: ReportWindow
    percentile_error: PercentileError
    items: list[ReportItem]


class TimeseriesPoint(Shape):
    t: datetime = Field(description="start of the hour or UTC day")
    value: float | None = Field(description="the metric; null for a rate or mean of no calls")
    calls: int


class TimeseriesSeries(Shape):
    version: VersionNumber | None = Field(description="null for the draft (every revision)")
    draft: bool
    label: str = Field(examples=["v3", "draft"])
    points: list[TimeseriesPoint] = Field(description="every interval of the window, in order")


class Timeseries(Shape):
    agent_id: str
    metric: Metric
    interval: Interval
    since: datetime = Field(description="the window's start, rounded down to the interval")
    until: datetime = Field(description="the window's end (exclusive), rounded up")
    series: list[TimeseriesSeries] = Field(description="versions ascending, then the draft")

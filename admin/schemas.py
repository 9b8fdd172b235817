"""What the admin API answers, and its path and query parameters, as pydantic models that the
OpenAPI document is generated from (request bodies: store/schemas.py). Handlers build plain
JSON; tests check that real answers satisfy these."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from httpkit.openapi import Shape
from store import channels, rollouts, stats
from store.calls import MAX_CALL_COUNT, Provider
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


class RolloutPath(ChannelPath):
    rollout_id: int = Field(ge=1, description="the rollout's id")


class CallPath(Shape):
    call_id: str = Field(
        description="the agentver call id (`call_` and 24 hex digits), or the provider's own "
        "call id as `provider:provider_call_id` (`twilio:CA…`, `telnyx:v3:…`, `generic:…`); "
        "a 404 lists both forms",
        examples=["call_0123456789abcdef01234567", "twilio:CA5f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"],
    )


class PageQuery(Shape):
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="page size")
    cursor: str | None = Field(None, description="next_cursor of the previous page (same filters)")


class AgentsQuery(PageQuery):
    archived: Literal["false", "true", "all"] = Field(
        default="false", description="live agents (the default), archived ones, or all"
    )


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
    provider: Provider | None = Field(None, description="the provider the call came from")
    provider_call_id: str | None = Field(
        None, description="the provider's own call id (Twilio's CallSid...); needs `provider`"
    )
    count: bool | None = Field(
        None,
        description=f"also count the matching calls (`total`), up to {MAX_CALL_COUNT:,}",
    )


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
        description='The ETag of the draft or channel this change is based on ("3"), e.g. the '
        "draft revision a publisher reviewed; 412 when stale",
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
    archived_at: datetime | None = Field(description="null while the agent is live")


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
    total: int | None = Field(
        None, ge=0, description="with `count=true`: how many calls match the filters (all pages)"
    )
    total_exact: bool | None = Field(
        None,
        description=f"with `count=true`: false when more than {MAX_CALL_COUNT:,} calls match, "
        "and `total` is that cap",
    )


class Principal(Shape):
    name: str
    role: Role
    scopes: list[str] | None = Field(description="the only agents it may see; null: all")


class Token(Shape):
    """A token as listed: never its secret."""

    id: int
    name: str
    role: Role
    created_at: datetime
    expires_at: datetime | None = Field(description="null: never expires")
    revoked_at: datetime | None
    last_used_at: datetime | None = Field(
        description="when it was last accepted, to within about ten seconds; null: never"
    )
    scopes: list[str] | None = Field(description="the only agents it may see; null: all")


class NewToken(Token):
    token: str = Field(description="the secret, shown this once")


class TokenList(Shape):
    items: list[Token]
    next_cursor: str | None


class TokenPath(Shape):
    token_id: int = Field(ge=1, description="the token's id")


SequentialMethod = Annotated[
    stats.SequentialMethod,
    Field(
        description="mixture sequential probability ratio test: its p-values and intervals stay "
        "valid however often they are looked at while calls arrive"
    ),
]


class Guardrails(Shape):
    number: Number
    rules: list[Rule]
    method: SequentialMethod = Field(
        description="a variant trips a rule when its always-valid 95% interval by this method "
        "lies wholly on the breaking side, after at least min_calls calls"
    )
    updated_at: datetime | None
    updated_by: str | None


class Comparison(Shape):
    baseline: int | str = Field(description="the version (or `draft`) or variant compared with")
    automation_rate_diff: float | None
    automation_rate_p_value: float | None = Field(
        description="always-valid, Bonferroni-adjusted for the verdict's two metrics"
    )
    mean_duration_diff_s: float | None
    mean_duration_p_value: float | None = Field(
        description="always-valid, Bonferroni-adjusted for the verdict's two metrics"
    )
    verdict: str = Field(
        description="`better`, `worse`, `no clear difference` or `too few calls`: from the "
        "automation rate first, then the mean duration (lower is better), at p-value 0.05"
    )
    min_sample_size: int = Field(description="analysed calls each side needs before a verdict")
    method: SequentialMethod


class ReportItem(BaseModel):
    """One group's outcomes: calls, duration, sentiment and automation rate with confidence
    intervals (its key and outcome fields beside `comparison`), and the comparison with the
    baseline."""

    comparison: Comparison | None


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


# --- rollouts --------------------------------------------------------------------------------


class RolloutTarget(Shape):
    label: str
    agent_id: str
    version: VersionNumber | None = Field(description="null: the draft")


class RolloutStart(Shape):
    variants: list[Variant]
    sticky: channels.Sticky


class RolloutEvent(Shape):
    at: datetime
    actor: str
    kind: rollouts.EventKind
    step: int = Field(ge=0, description="index into steps after the event")
    share: int = Field(ge=1, le=100, description="the target's percent after the event")
    reason: str | None
    figures: dict[str, Any] | None = Field(description="the calls per side it was decided on")


class Rollout(Shape):
    id: int
    number: Number
    state: rollouts.State
    target: RolloutTarget
    steps: list[int]
    step: int = Field(ge=0, description="index into steps of the live step")
    share: int = Field(ge=1, le=100, description="the target's percent of the calls now")
    hold_s: int
    min_calls: int
    rules: list[Rule]
    start: RolloutStart = Field(description="the routing an abort or a rollback goes back to")
    step_started_at: datetime
    hold_until: datetime = Field(description="the live step's hold time ends")
    reason: str | None = Field(description="why it last paused or ended")
    created_at: datetime
    created_by: str
    ended_at: datetime | None
    events: list[RolloutEvent]


class RolloutSide(Shape):
    calls: int
    analysed: int


class RolloutRuleStatus(Rule):
    breached: bool


class RolloutProgress(Shape):
    target: RolloutSide
    baseline: RolloutSide = Field(description="the starting variants together")
    step_analysed: int = Field(description="the target's analysed calls in the live step")
    calls_needed: int = Field(description="analysed calls the live step still waits for")
    target_outcomes: ReportItem
    guardrails: list[RolloutRuleStatus]


class CurrentRollout(Rollout):
    progress: RolloutProgress


class RolloutList(Shape):
    current: CurrentRollout | None = Field(description="the rollout in progress, if any")
    items: list[Rollout] = Field(description="every rollout of the channel, newest first")
    next_cursor: str | None

"""The API's shapes: query parameters in, responses out. /openapi.json is generated from these."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SkipValidation, field_validator

from storage.base import RunFilter

Kind = Literal["chat_turn", "compaction", "title_generation", "quickgen", "unknown"]
Status = Literal["in_progress", "completed", "error", "interrupted"]
AttemptStatus = Literal["in_progress", "completed", "failed", "interrupted"]
ConversationSource = Literal["header", "client_session", "continuation", "derived"]
Source = Literal["header", "client_metadata", "profile", "heuristic", "default"]
MAX_LIMIT = 500

# A call's normalized request or response: validated as it was recorded (`addons.providers.base`),
# and sent on as stored (an `orjson.Fragment` the encoder copies; a large one is MiBs of JSON).
Payload = SkipValidation[dict[str, Any] | None]


def stamp(value: datetime | None) -> str | None:
    """Query timestamps in the stored form (UTC, milliseconds) so they compare as text; a moment
    past what the calendar holds in UTC (year 1 with an offset) is clamped to its end."""
    if value is None:
        return None
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        utc = (datetime.min if value.year == 1 else datetime.max).replace(tzinfo=UTC)
    return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---- query parameters ---------------------------------------------------------------------------


class _Query(BaseModel):
    model_config = ConfigDict(extra="ignore")  # dashboards add cache-busters; unknown keys are harmless


class Page(_Query):
    limit: int = Field(50, ge=1, le=MAX_LIMIT, description="page size")
    cursor: str | None = Field(None, description="`next_cursor` of the previous page")


class RunsQuery(Page):
    kind: Kind | None = None
    status: Status | None = None
    conversation_id: str | None = None
    provider: str | None = None
    model: str | None = None
    since: AwareDatetime | None = Field(None, description="runs started at or after (RFC 3339)")
    until: AwareDatetime | None = Field(None, description="runs started before (RFC 3339)")
    has_error: bool | None = None
    q: str | None = Field(None, max_length=500, description="text in the run's prompt or first message")

    def where(self) -> RunFilter:
        """The store's filter for these parameters (the API, the viewer and the CLI read alike)."""
        return RunFilter(
            kind=self.kind, status=self.status, conversation_id=self.conversation_id,
            provider=self.provider, model=self.model, since=stamp(self.since), until=stamp(self.until),
            has_error=self.has_error, q=self.q or None,
        )  # fmt: skip


class ConversationsQuery(Page):
    q: str | None = Field(None, max_length=500, description="text in the conversation's first message")


class StatsQuery(_Query):
    since: AwareDatetime | None = Field(None, description="window start (default: 24 hours before `until`)")
    until: AwareDatetime | None = Field(None, description="window end (default: now)")


class DeleteRunsQuery(_Query):
    conversation_id: str | None = None
    started_before: AwareDatetime | None = None


class EventsQuery(_Query):
    conversation_id: str | None = None
    kind: Kind | None = None


# ---- responses ----------------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class Usage(_Out):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


class Cost(_Out):
    """USD, from the normalized usage and the price table at the time of the call."""

    input: float
    output: float
    cache_read: float
    cache_write: float
    total: float
    currency: str = "USD"
    source: str


class ErrorInfo(_Out):
    model_config = ConfigDict(extra="allow", populate_by_name=True, serialize_by_alias=True)

    error_class: str = Field(alias="class")
    message: str
    type: str | None = None
    code: str | None = None


class Classification(_Out):
    source: Source
    reason: str


class Attempt(_Out):
    id: str
    step_id: str
    run_id: str
    number: int
    status: AttemptStatus
    method: str
    url: str
    http_status: int | None
    error: ErrorInfo | None
    started_at: str
    finished_at: str | None
    ttfb_ms: float | None = Field(description="request start to the first response body byte")
    duration_ms: float | None
    streamed: bool
    request_bytes: int
    response_bytes: int
    request_headers: dict[str, str]
    response_headers: dict[str, str] | None
    retry_signal: str | None
    response: Payload = Field(None, description="this attempt's own normalized response")
    cost: Cost | None = Field(None, description="null when the model's price is not known")


class AttemptDetail(Attempt):
    request_body: str | None = None
    response_body: str | None = None
    request_truncated: bool = False
    response_truncated: bool = False


class Step(_Out):
    id: str
    run_id: str
    number: int
    status: Status
    started_at: str
    finished_at: str | None
    request: Payload
    response: Payload
    usage: Usage | None
    error: ErrorInfo | None
    cost: Cost | None = None
    attempts: list[Attempt] = []


class Run(_Out):
    id: str
    conversation_id: str | None
    kind: Kind
    classification: Classification
    status: Status
    provider: str | None
    api: str | None
    model: str | None
    endpoint: str | None
    first_message: str | None
    prompt: str | None = Field(None, description="the user's own words that started the run")
    started_at: str
    updated_at: str
    finished_at: str | None
    step_count: int
    attempt_count: int
    usage: Usage
    cost: Cost | None = Field(None, description="null when no attempt's price is known")
    error: ErrorInfo | None
    conversation_source: ConversationSource | None = Field(
        None, description="how the run was placed in its conversation"
    )


class RunDetail(Run):
    steps: list[Step] = []


class RunList(_Out):
    runs: list[Run]
    next_cursor: str | None


class Conversation(_Out):
    id: str
    first_message: str | None
    run_count: int
    started_at: str
    last_activity_at: str
    kinds: list[Kind] = Field([], description="the kinds of run the conversation holds")
    error_count: int = Field(0, description="runs that ended with an error")
    total_tokens: int = 0
    cost_total: float | None = Field(None, description="USD; null when no run's price is known")

    @field_validator("kinds", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return sorted(value.split(",")) if isinstance(value, str) else value or []


class ConversationList(_Out):
    conversations: list[Conversation]
    next_cursor: str | None


class Percentiles(_Out):
    p50: float | None
    p95: float | None
    p99: float | None


class KindStatusCount(_Out):
    kind: Kind
    status: Status
    count: int


class RunStats(_Out):
    total: int
    by_kind: dict[str, int]
    by_status: dict[str, int]
    by_kind_and_status: list[KindStatusCount]
    error_rate: float = Field(description="share of runs that ended with an error")


class AttemptStats(_Out):
    total: int
    with_error: int
    error_rate: float
    by_error_class: dict[str, int]
    percentiles: Literal["exact", "buckets"] = Field(
        description="exact: ranked from the window's attempts; buckets: from the hourly rollups'"
        " logarithmic buckets (a window of over 20,000 attempts), each within 1 % of the exact value"
    )
    duration_ms: Percentiles
    ttfb_ms: Percentiles


class ModelCost(_Out):
    provider: str | None
    model: str | None
    total: float
    runs: int


class CostStats(_Out):
    total: float | None = Field(description="USD over the window; null when no run's price is known")
    currency: str = "USD"
    by_model: list[ModelCost] = []


class Stats(_Out):
    since: str
    until: str
    runs: RunStats
    usage: Usage
    cost: CostStats | None = None
    attempts: AttemptStats


class Deleted(_Out):
    deleted: int


class ExportedStep(Step):
    attempts: list[AttemptDetail] = []  # type: ignore[assignment]


class ExportedRun(RunDetail):
    steps: list[ExportedStep] = []  # type: ignore[assignment]


class Export(_Out):
    version: Literal[1] = 1
    exported_at: str
    generator: str
    run: ExportedRun


class Health(_Out):
    status: str
    checks: dict[str, bool] = {}
    reasons: dict[str, str] = {}  # for each failing check, why


class ApiErrorBody(BaseModel):
    code: str
    message: str


class ApiError(BaseModel):
    error: ApiErrorBody

"""The API's response shapes: what serialises every response and what /openapi.json describes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Kind = Literal["chat_turn", "compaction", "title_generation", "quickgen", "unknown"]
Status = Literal["in_progress", "completed", "error", "interrupted"]
AttemptStatus = Literal["in_progress", "completed", "failed", "interrupted"]
Source = Literal["header", "client_metadata", "profile", "heuristic", "default"]


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class Usage(_Out):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


class ErrorInfo(_Out):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

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
    response: dict[str, Any] | None = Field(None, description="this attempt's own normalized response")


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
    request: dict[str, Any] | None
    response: dict[str, Any] | None
    usage: Usage | None
    error: ErrorInfo | None
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
    started_at: str
    updated_at: str
    finished_at: str | None
    step_count: int
    attempt_count: int
    usage: Usage
    error: ErrorInfo | None


class RunDetail(Run):
    steps: list[Step] = []


class RunList(_Out):
    runs: list[Run]
    next_cursor: str | None


class ApiErrorBody(BaseModel):
    code: str
    message: str


class ApiError(BaseModel):
    error: ApiErrorBody

"""The provider-neutral shape of one LLM call: what every parser produces and storage keeps."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error", "other"]
ErrorClass = Literal[
    "rate_limited",
    "overloaded",
    "server_error",
    "auth_error",
    "client_error",
    "timeout",
    "connection_error",
    "stream_error",
    "canceled",
    "proxy_error",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Model):
    type: Literal["text"] = "text"
    text: str
    original_length: int | None = None


class ReasoningPart(_Model):
    type: Literal["reasoning"] = "reasoning"
    text: str
    original_length: int | None = None
    redacted: bool | None = None


class ToolCallPart(_Model):
    type: Literal["tool_call"] = "tool_call"
    id: str | None = None
    name: str
    arguments: Any = None
    server: bool | None = None  # run by the provider itself (Anthropic server tools)


class ToolResultPart(_Model):
    type: Literal["tool_result"] = "tool_result"
    id: str | None = None
    name: str | None = None
    result: Any = None
    is_error: bool | None = None


class MediaPart(_Model):
    type: Literal["media"] = "media"
    media_type: str
    size: int


class OtherPart(_Model):
    """A part of a type we do not know yet, kept as it came (capped) rather than dropped."""

    type: Literal["other"] = "other"
    raw_type: str | None = None
    data: Any = None


Part = Annotated[
    TextPart | ReasoningPart | ToolCallPart | ToolResultPart | MediaPart | OtherPart,
    Field(discriminator="type"),
]


class Message(_Model):
    role: Role
    parts: list[Part]
    raw_role: str | None = None  # the wire's own role where it is none of ours (kept as `user`)


class Tool(_Model):
    name: str
    description: str | None = None
    parameters: Any = None
    type: str | None = None  # set for provider built-ins (web_search, code_interpreter, ...)


class Usage(_Model):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{k: getattr(self, k) + getattr(other, k) for k in Usage.model_fields})


class Error(_Model):
    """What went wrong with an attempt: `class` is the contract's `error.class` enum."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    error_class: ErrorClass = Field(alias="class")
    message: str
    type: str | None = None  # the provider's own error type, e.g. "overloaded_error"
    code: str | None = None


class SessionId(_Model):
    source: str  # where the client stated it: a header name or a body field path
    value: str


class OutputSchema(_Model):
    """Structured output the request asks for: JSON mode, a JSON schema, or a forced tool's input."""

    name: str | None = None
    fields: list[str] = Field(
        default_factory=list
    )  # the top-level property names, which say what the output is for


class Signals(_Model):
    """What a request says about itself beyond its messages, read by the provider's parser (body)
    and the boundary (headers), so classification and grouping never read raw bodies."""

    session_ids: list[SessionId] = Field(default_factory=list)  # most specific first
    user: str | None = None  # an end-user id (OpenAI `user`): not a session
    previous_response_id: str | None = None
    output_schema: OutputSchema | None = None
    forced_tool: str | None = None
    client: str | None = None  # the application, from its headers or user agent
    client_kind: str | None = None  # a kind the client itself states (Codex `request_kind`)
    client_purpose: str | None = None  # a finer purpose it states (Codex `thread_source`)
    compaction_endpoint: bool = False  # an API endpoint whose only job is compaction
    retry_count: int | None = None  # the client's own retry counter (`x-stainless-retry-count`)


class Request(_Model):
    api: str
    model: str | None = None
    system: str | None = None
    messages: list[Message] = Field(default_factory=list)
    tools: list[Tool] = Field(default_factory=list)
    tool_choice: Any = None
    options: dict[str, Any] = Field(default_factory=dict)
    stream: bool = False
    signals: Signals = Field(default_factory=Signals)
    warnings: list[str] = Field(
        default_factory=list
    )  # what the parser kept as it came rather than understood


class Response(_Model):
    id: str | None = None
    model: str | None = None
    content: list[Part] = Field(default_factory=list)
    finish_reason: FinishReason | None = None
    raw_finish_reason: str | None = None
    usage: Usage | None = None
    warnings: list[str] = Field(default_factory=list)
    error: Error | None = None  # an error the body itself reported (error JSON, error event)
    complete: bool = True  # False for a stream that ended without its terminal event

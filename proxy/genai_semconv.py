"""OpenTelemetry attribute names and values this project emits, in one place.

The GenAI conventions are still in development and move faster than the
`opentelemetry-semantic-conventions` package, so the names are spelled out here, from the
registry of open-telemetry/semantic-conventions-genai (model/gen-ai/registry.yaml) and the
stable HTTP, URL, server and error conventions. When a name moves, it moves here.
"""

from __future__ import annotations

from typing import Final

# ---- GenAI (development) ---------------------------------------------------------------------
OPERATION_NAME: Final = "gen_ai.operation.name"
PROVIDER_NAME: Final = "gen_ai.provider.name"
REQUEST_MODEL: Final = "gen_ai.request.model"
REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
REQUEST_TOP_P: Final = "gen_ai.request.top_p"
REQUEST_TOP_K: Final = "gen_ai.request.top_k"
REQUEST_STOP_SEQUENCES: Final = "gen_ai.request.stop_sequences"
REQUEST_STREAM: Final = "gen_ai.request.stream"
RESPONSE_ID: Final = "gen_ai.response.id"
RESPONSE_MODEL: Final = "gen_ai.response.model"
RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"
USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
USAGE_CACHE_WRITE_INPUT_TOKENS: Final = "gen_ai.usage.cache_write.input_tokens"
# the registry's spelling of the same count until the rename; backends still key on it
USAGE_CACHE_CREATION_INPUT_TOKENS: Final = "gen_ai.usage.cache_creation.input_tokens"
USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"
CONVERSATION_ID: Final = "gen_ai.conversation.id"
CONVERSATION_COMPACTED: Final = "gen_ai.conversation.compacted"  # only ever `true`
TOOL_NAME: Final = "gen_ai.tool.name"
TOOL_TYPE: Final = "gen_ai.tool.type"
TOOL_CALL_ID: Final = "gen_ai.tool.call.id"
TOOL_CALL_ARGUMENTS: Final = "gen_ai.tool.call.arguments"  # content
TOOL_CALL_RESULT: Final = "gen_ai.tool.call.result"  # content
INPUT_MESSAGES: Final = "gen_ai.input.messages"  # content
OUTPUT_MESSAGES: Final = "gen_ai.output.messages"  # content
SYSTEM_INSTRUCTIONS: Final = "gen_ai.system_instructions"  # content

OPERATION_CHAT: Final = "chat"
OPERATION_EXECUTE_TOOL: Final = "execute_tool"
TOOL_TYPE_FUNCTION: Final = "function"

# our provider names -> the registry's `gen_ai.provider.name` values; others pass as they are
PROVIDERS: Final[dict[str, str]] = {
    "gemini": "gcp.gemini",
    "vertex_ai": "gcp.vertex_ai",
    "azure_openai": "azure.ai.openai",
    "bedrock": "aws.bedrock",
    "mistral": "mistral_ai",
    "xai": "x_ai",
}

# input/output message part types (gen-ai-input-messages.json, gen-ai-output-messages.json)
PART_TEXT: Final = "text"
PART_REASONING: Final = "reasoning"
PART_TOOL_CALL: Final = "tool_call"
PART_TOOL_CALL_RESPONSE: Final = "tool_call_response"

# ---- HTTP, URL, server, error (stable) -----------------------------------------------------------
HTTP_REQUEST_METHOD: Final = "http.request.method"
HTTP_REQUEST_RESEND_COUNT: Final = "http.request.resend_count"
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
HTTP_REQUEST_BODY_SIZE: Final = "http.request.body.size"
HTTP_RESPONSE_BODY_SIZE: Final = "http.response.body.size"
URL_FULL: Final = "url.full"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
ERROR_TYPE: Final = "error.type"

# ---- this project's own -----------------------------------------------------------------------
RUN_ID: Final = "chatdebug.run.id"
RUN_KIND: Final = "chatdebug.run.kind"
RUN_STATUS: Final = "chatdebug.run.status"
STEP_ID: Final = "chatdebug.step.id"
STEP_NUMBER: Final = "chatdebug.step.number"
ATTEMPT_ID: Final = "chatdebug.attempt.id"
API: Final = "chatdebug.api"
COST_TOTAL: Final = "chatdebug.cost.total_usd"
CONVERSATION: Final = "chatdebug.conversation.id"  # ours, also when it was only derived
RETRY_SIGNAL: Final = "chatdebug.retry_signal"

"""A planned run as the calls the pipeline hands the tracker: normalized requests and responses,
the attempt rows the boundary fills, and each ending as `addons.outcome.decide` reads it.

`RunCalls.attempts` is a generator: it yields the clock time of its next call and makes that call
on the tracker when resumed, so runs of many conversations can interleave in time order.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Generator, Iterator
from typing import Any

import orjson

from addons.classify import Classification
from addons.normalized import (
    Error,
    Message,
    ReasoningPart,
    Request,
    Response,
    Role,
    SessionId,
    Signals,
    TextPart,
    Tool,
    ToolCallPart,
    ToolResultPart,
    Usage,
)
from addons.outcome import decide
from addons.providers.base import cap_request_texts
from addons.tracker import Tracker
from bench.api.traffic import ERRORS, RETRYABLE, Conversation, RunPlan, Texts, weighted
from storage.records import AttemptRow, Row, timestamp

RAW_FINISH = {
    "openai.chat_completions": ("stop", "tool_calls"),
    "openai.responses": ("completed", "completed"),
    "anthropic.messages": ("end_turn", "tool_use"),
    "gemini.generate_content": ("STOP", "STOP"),
    "ollama.chat": ("stop", "stop"),
}
TITLE_SYSTEM = "Write a title of at most six words for the conversation below. Reply with the title only."
COMPACT_ASK = "Summarize the conversation so far in under 300 words, keeping decisions and open questions."
QUICKGEN_SYSTEM = (
    "Suggest three short follow-up questions the user might ask next, as a JSON array of strings."
)
TEXT_LIMIT = 10_000  # the sidecar's default --text-limit
# flow errors as mitmproxy words them: `decide` reads timeout, connection_error and canceled from these
FLOW_ERRORS = {
    "timeout": "upstream timed out: no response within 600 s",
    "connection_error": "connection reset by peer",
    "canceled": "client disconnected",
}


def _user(text: str) -> Message:
    return Message(role="user", parts=[TextPart(text=text)])


def _said(role: Role, text: str) -> Message:
    return Message(role=role, parts=[TextPart(text=text)])


def _dump(model: Request | Response) -> dict[str, Any]:
    """As the pipeline stores a request or response."""
    return model.model_dump(mode="json", exclude_none=True, by_alias=True)


class RunCalls:
    """Turns plans into tracker calls; `submit` is where the pipeline would hand the body rows."""

    def __init__(
        self,
        tracker: Tracker,
        submit: Callable[[Row], None],
        rng: random.Random,
        texts: Texts,
        conversations: list[Conversation],
    ) -> None:
        self.tracker = tracker
        self.submit = submit
        self.rng = rng
        self.texts = texts
        self.conversations = conversations
        self._tools: dict[str, Tool] = {}

    def attempts(self, plan: RunPlan) -> Iterator[float]:
        """The run's attempts in time order: yields when the next call begins or ends, then makes it."""
        rng = self.rng
        conv = self.conversations[plan.conversation] if plan.conversation is not None else None
        request = self._request(plan, conv)
        classification = Classification(plan.kind, *plan.source)
        hints = {"x-chatdebug-conversation": conv.id} if conv and not conv.stated else {}
        when = plan.started
        last_step = len(plan.steps)
        for number, step_plan in enumerate(plan.steps, start=1):
            tool = step_plan.tool if conv and conv.tools else None
            if number == last_step and plan.outcome == "stale" and conv and conv.tools:
                tool = rng.randrange(len(conv.tools))  # it asked for a tool; the client never came back
            response: Response | None = None
            for attempt_number in range(1, step_plan.attempts + 1):
                final = attempt_number == step_plan.attempts
                fate = plan.outcome if final and number == last_step else ("completed" if final else "retry")
                yield when
                when, response = yield from self._attempt(
                    plan, request, classification, hints, attempt_number, fate, tool, conv, when
                )
                if fate == "live":
                    return
                if not final:
                    when += rng.uniform(0.4, 8.0)  # the client's backoff
            if tool is not None and conv is not None and number < last_step and response is not None:
                messages = [*request.messages, *self._tool_turn(conv, tool, response)]
                request = request.model_copy(update={"messages": messages})
                when += rng.uniform(0.1, 4.0)  # the client runs the tool

    # ---- one attempt: begin, then (unless it is still in flight) end ---------------------------

    def _attempt(
        self,
        plan: RunPlan,
        request: Request,
        classification: Classification,
        hints: dict[str, str],
        number: int,
        fate: str,
        tool: int | None,
        conv: Conversation | None,
        when: float,
    ) -> Generator[float, None, tuple[float, Response | None]]:
        """Begins at `when` (the caller yielded it); yields when it ends; returns (end, response)."""
        rng, model = self.rng, plan.model
        flow_id = f"{rng.getrandbits(128):032x}"
        retry_count = number - 1 if number > 1 and rng.random() < 0.7 else None
        if retry_count != request.signals.retry_count:
            request = request.model_copy(
                update={"signals": request.signals.model_copy(update={"retry_count": retry_count})}
            )
        body_text = orjson.dumps(_wire_request(plan, request)).decode()
        headers = {
            "host": model.endpoint.split("/", 1)[0],
            "content-type": "application/json",
            "accept": "text/event-stream" if plan.streamed else "application/json",
            "user-agent": "AsyncOpenAI/Python 1.99.1"
            if model.api.startswith("openai")
            else "python-httpx/0.28.1",
            "content-length": str(len(body_text)),
            "x-stainless-lang": "python",
            "x-stainless-retry-count": str(number - 1),
        }
        if model.provider == "anthropic":
            headers["anthropic-version"] = "2023-06-01"
        attempt = AttemptRow(
            id=f"att_{flow_id}",
            url=model.url,
            started_at=timestamp(when),
            request_bytes=len(body_text),
            request_headers=headers,
        )
        stored = cap_request_texts(request, TEXT_LIMIT)  # what the pipeline hands the tracker
        flight = self.tracker.begin(
            flow_id,
            stored,
            classification,
            attempt,
            api=model.api,
            provider=model.provider,
            endpoint=model.endpoint,
            started_at=when,
            hints=hints,
            request_dump=_dump(stored),
        )
        flight.streamed = plan.streamed
        flight.body.request_body = body_text
        self.submit(dataclasses.replace(flight.body))
        if fate == "live":
            return when, None

        ttfb = rng.lognormvariate(math.log(700), 0.6)
        response: Response | None = None
        status: int | None = 200
        flow_error: str | None = None
        response_body: str | None = None
        error = None
        if fate == "retry":
            error = weighted(rng, [(e, e[1]) for e in RETRYABLE])
        elif fate == "error":
            error = weighted(rng, [(e, e[1]) for e in ERRORS])
        if fate == "canceled":
            duration = ttfb + rng.uniform(200, 8000)
            flow_error = FLOW_ERRORS["canceled"]
        elif error is not None:
            cls, _, status, kind, message = error
            if cls == "timeout":
                duration = 600_000.0 if rng.random() < 0.3 else rng.uniform(30_000, 120_000)
            elif cls == "stream_error":
                duration = ttfb + rng.uniform(500, 20_000)
            else:
                duration = ttfb = rng.uniform(40, 900)
            if cls in FLOW_ERRORS:
                flow_error = FLOW_ERRORS[cls]
            elif cls == "stream_error":
                response = self._response(plan, tool, conv).model_copy(update={"complete": False})
                response_body = "data: {}\n\n"
            else:
                wire = {"type": kind, "message": message}
                response = Response(error=Error.model_validate({"class": cls, **wire}))
                response_body = orjson.dumps({"error": wire}).decode()
        else:
            response = self._response(plan, tool, conv)
            assert response.usage is not None
            duration = ttfb + response.usage.output_tokens * rng.uniform(8, 25)
            text = next((p.text for p in response.content if isinstance(p, TextPart)), "")
            chunks = [text[i : i + 80] for i in range(0, min(len(text), 320), 80)]
            if plan.streamed:
                response_body = "".join(f"data: {orjson.dumps({'delta': c}).decode()}\n\n" for c in chunks)
            else:
                response_body = orjson.dumps({"id": response.id, "text": text[:320]}).decode()
        end = when + duration / 1000
        yield end

        attempt.http_status = status if flow_error is None or fate == "canceled" else None
        attempt.streamed = plan.streamed
        attempt.duration_ms = round(duration, 3)
        if flow_error is None or fate == "canceled":
            attempt.ttfb_ms = round(ttfb, 3)
            attempt.response_headers = {
                "content-type": "text/event-stream"
                if plan.streamed and status == 200
                else "application/json",
                "x-request-id": f"req_{rng.getrandbits(64):016x}",
                "x-ratelimit-remaining-requests": str(rng.randint(0, 5000)),
                "x-ratelimit-remaining-tokens": str(rng.randint(0, 2_000_000)),
                "server": "cloudflare",
            }
        attempt.response_bytes = len(response_body or "") * 3
        flight.body.response_body = response_body
        outcome = decide(attempt.http_status, response, flow_error, None, client_gone=fate == "canceled")
        self.tracker.end(flow_id, outcome, response, _dump(response) if response else None, end)
        self.submit(flight.body)
        return end, response

    # ---- what the client sends and the provider answers -------------------------------------------

    def _history(self, conv: Conversation, plan: RunPlan, index: int) -> list[Message]:
        """The conversation as the client resends it: the opener, then the last few turns."""
        texts = self.texts
        out = [_user(conv.opener)]
        turns = conv.user_turns
        for t in range(1, plan.turn):
            if t > 1 and t < plan.turn - 2:
                continue  # older turns were compacted away
            if t > 1:
                out.append(_user(texts.user[turns[t - 1]]))
            out.append(_said("assistant", texts.assistant[(index * 7 + t) % len(texts.assistant)]))
        return out

    def _request(self, plan: RunPlan, conv: Conversation | None) -> Request:
        texts, rng, model = self.texts, self.rng, plan.model
        system: str | None = None
        tools: list[dict[str, Any]] = []
        index = plan.conversation or 0
        if plan.kind == "chat_turn" and conv is not None:
            system, tools = conv.system, conv.tools
            messages = self._history(conv, plan, index)
            if plan.turn > 1:
                messages.append(_user(texts.user[conv.user_turns[plan.turn - 1]]))
        elif plan.kind == "title_generation" and conv is not None:
            system, messages = TITLE_SYSTEM, [_user(conv.opener)]
        elif plan.kind == "compaction" and conv is not None:
            system = conv.system
            messages = [*self._history(conv, plan, index), _user(COMPACT_ASK)]
        elif plan.kind == "quickgen":
            system = QUICKGEN_SYSTEM
            messages = [_user(rng.choice(texts.user)), _said("assistant", rng.choice(texts.assistant))]
        else:
            messages = [_user(rng.choice(texts.user))]
        options: dict[str, Any] = {"max_output_tokens": 16000 if model.reasoning else 4096}
        if model.reasoning:
            options["reasoning_effort"] = rng.choice(["low", "medium", "high"])
        else:
            options["temperature"] = rng.choice([0.2, 0.7, 1.0])
        sessions = [SessionId(source="metadata.session_id", value=conv.id)] if conv and conv.stated else []
        return Request(
            api=model.api,
            model=model.name,
            system=system,
            messages=messages,
            tools=[self._tool(t) for t in tools],
            tool_choice="auto" if tools else None,
            options=options,
            stream=plan.streamed,
            signals=Signals(session_ids=sessions, client="bench"),
        )

    def _tool(self, spec: dict[str, Any]) -> Tool:
        if (tool := self._tools.get(spec["name"])) is None:
            tool = self._tools[spec["name"]] = Tool.model_validate(spec)
        return tool

    def _tool_turn(self, conv: Conversation, tool: int, response: Response) -> list[Message]:
        """The client's next request after a tool call: the call as the model made it, and its result."""
        call = next(p for p in response.content if isinstance(p, ToolCallPart))
        result = {"ok": True, "items": [self.rng.choice(self.texts.tool_results) for _ in range(2)]}
        return [
            Message(role="assistant", parts=[call]),
            Message(role="tool", parts=[ToolResultPart(id=call.id, name=call.name, result=result)]),
        ]

    def _response(self, plan: RunPlan, tool: int | None, conv: Conversation | None) -> Response:
        rng, texts, model = self.rng, self.texts, plan.model
        content: list[Any] = []
        reasoning = 0
        if model.reasoning and plan.kind == "chat_turn":
            content.append(ReasoningPart(text=rng.choice(texts.reasoning)))
            reasoning = rng.randint(64, 2400)
        if tool is not None and conv is not None:
            spec = conv.tools[tool]
            arguments = {name: rng.choice(texts.user)[:60] for name in spec["parameters"]["required"]}
            content.append(
                ToolCallPart(id=f"call_{rng.getrandbits(48):012x}", name=spec["name"], arguments=arguments)
            )
            finish = "tool_calls"
        elif plan.kind == "title_generation":
            content.append(TextPart(text=" ".join(rng.choice(texts.user).split()[:5]).rstrip(".?!")))
            finish = "stop"
        else:
            content.append(TextPart(text=rng.choice(texts.assistant)))
            finish = "stop"
        prompt = rng.randint(400, 9000) if plan.kind in ("chat_turn", "compaction") else rng.randint(60, 900)
        output = rng.randint(8, 30) if plan.kind == "title_generation" else rng.randint(40, 1600)
        cached = int(prompt * rng.uniform(0.3, 0.9)) if plan.turn > 1 and model.provider != "ollama" else 0
        usage = Usage(
            input_tokens=prompt,
            output_tokens=output + reasoning,
            total_tokens=prompt + output + reasoning,
            cache_read_tokens=cached,
            cache_write_tokens=rng.randint(0, 1200) if model.provider == "anthropic" else 0,
            reasoning_tokens=reasoning,
        )
        return Response(
            id=f"resp_{rng.getrandbits(96):024x}",
            model=model.name,
            content=content,
            finish_reason=finish,  # type: ignore[arg-type]
            raw_finish_reason=RAW_FINISH[model.api][finish == "tool_calls"],
            usage=usage,
        )


def _wire_request(plan: RunPlan, request: Request) -> dict[str, Any]:
    """The raw body kept beside the attempt: the last user text only, so bodies stay small."""
    last_user = next(
        (p.text for m in reversed(request.messages) if m.role == "user"
         for p in m.parts if isinstance(p, TextPart)), "",
    )  # fmt: skip
    return {
        "model": plan.model.name,
        "stream": plan.streamed,
        "messages": [{"role": "user", "content": last_user[:300]}],
    }

"""What redaction costs per recorded exchange, on a realistic call (a tool loop's second step).

`per-field`: the pipeline's own calls for one exchange (headers, URL, the request and response
dumps, both raw bodies). `choke point`: `Redactor.row` over the rows one exchange submits (the
run, step and attempt at its start and end, the bodies twice), when this version has it.

    .venv/bin/python bench/redact_bench.py            # a few seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from addons import redact
from addons.providers.base import Call
from addons.providers.openai_chat import API
from storage.records import AttemptRow, BodyRow, Row, RunRow, StepRow

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "openai_chat"
KEY = "sk-proj-BENCHbenchBENCHbench0123456789"
HEADERS = [
    ("host", "api.openai.com"),
    ("authorization", f"Bearer {KEY}"),
    ("content-type", "application/json"),
    ("user-agent", "OpenAI/Python 1.99.0"),
    ("x-stainless-retry-count", "0"),
    ("openai-organization", "org-bench"),
]
URL = "https://api.openai.com/v1/chat/completions"


def exchange() -> tuple[list[Row], Callable[[], None]]:
    """The rows of one exchange, and the pipeline's per-field calls for it."""
    call = Call(method="POST", host="api.openai.com", path="/v1/chat/completions")
    request_bytes = (FIXTURES / "parallel_tool_calls.request.json").read_bytes()
    response_bytes = (FIXTURES / "parallel_tool_calls.sse").read_bytes()
    request = API.parse_request(orjson.loads(request_bytes), call)
    parser = API.response_parser(call, "text/event-stream", 200)
    parser.feed(response_bytes)
    response = parser.finish()
    request_dump = request.model_dump(mode="json", exclude_none=True, by_alias=True)
    response_dump = response.model_dump(mode="json", exclude_none=True, by_alias=True)
    request_text, response_text = request_bytes.decode(), response_bytes.decode()

    def per_field() -> None:
        secrets = redact.secret_values(HEADERS, URL)
        redact.url(URL)
        redact.headers(HEADERS)
        redact.json_fields(request_dump, secrets)
        redact.text(request_text, secrets)
        redact.json_fields(response_dump, secrets)
        redact.text(response_text, secrets)

    run = RunRow(
        id="run_1", conversation_id="conv_1", kind="chat_turn", model="gpt-4.1", provider="openai",
        endpoint="api.openai.com/v1/chat/completions", first_message="What's the weather in Paris?",
    )  # fmt: skip
    step = StepRow(id="stp_1", run_id="run_1", request=request_dump)
    attempt = AttemptRow(
        id="att_1", step_id="stp_1", run_id="run_1", url=URL, request_headers=redact.headers(HEADERS)
    )
    body = BodyRow(id="att_1", request_body=request_text)
    done = [
        dataclasses.replace(run, status="completed", output_tokens=40),
        dataclasses.replace(step, response=response_dump, usage={"input_tokens": 10}),
        dataclasses.replace(attempt, response_headers={"content-type": "text/event-stream"}),
        dataclasses.replace(body, response_body=response_text),
    ]
    return [run, step, attempt, body, *done], per_field


def measure(fn: Callable[[], None], seconds: float) -> tuple[float, float]:
    """Median and p95 CPU microseconds per call (this process's CPU time: the machine's other
    load moves it less than wall time), over batches for `seconds`."""
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.process_time()
        for _ in range(20):
            fn()
        samples.append((time.process_time() - start) / 20 * 1e6)
    quantiles = statistics.quantiles(samples, n=20)
    return statistics.median(samples), quantiles[18]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()
    rows, per_field = exchange()
    print("| path | CPU µs / exchange p50 | p95 |\n|---|--:|--:|")
    p50, p95 = measure(per_field, args.seconds)
    print(f"| per-field calls | {p50:.1f} | {p95:.1f} |")
    redactor_type = getattr(redact, "Redactor", None)
    if redactor_type is not None:
        redactor = redactor_type()
        redactor.learn(HEADERS, URL)

        def one_exchange() -> None:
            redactor._clean.clear()  # each exchange brings new content; its own rows repeat it
            for row in rows:
                redactor.row(row)

        p50, p95 = measure(one_exchange, args.seconds)
        print(f"| choke point, {len(rows)} rows | {p50:.1f} | {p95:.1f} |")


if __name__ == "__main__":
    main()

"""The redaction choke point on its own: rows carrying secrets in every field type, the real
pipeline with its per-field calls switched off, and log records."""

from __future__ import annotations

import json
import logging
import types
from typing import Any

import pytest
from mitmproxy.test import tflow, tutils

from addons import pipeline as pipeline_module
from addons import redact
from addons.pipeline import Pipeline
from addons.recorder import Recorder
from addons.redact import REDACTED, Learned, Redactor, install_log_redaction, is_credential, is_secret_field
from storage.records import AttemptRow, BodyRow, Row, RunRow, StepRow, dumps, names
from tests import wire

KEY = "sk-proj-PLANTEDkey0000000000000000000001"
TOKEN = "PLANTED-opaque-token-0002"  # not key-shaped: only learning it can catch it elsewhere
SECRETS = {
    "key": KEY,
    "token": TOKEN,
    "tool": "PLANTED-tool-result-0003",
    "list": "PLANTED-list-value-0004",
    "object": "PLANTED-object-value-0005",
    "escaped": "PLANTED-escaped-name-0006",
    "long": "PLANTED-long-name-0007",
    "auth": "PLANTED-auth-param-0008",
    "private": "PLANTED-private-token-0009",
    "nested": "PLANTED-nested-twice-0010",
    "cut": "PLANTED-cut-short-0011",
    "gemini": "AIzaSyPLANTEDgeminikey000000000000000012",
}
LONG_NAME = "service_account_credentials_for_the_production_data_warehouse_primary_" * 3 + "private_key"


def leaks(value: Any) -> list[str]:
    text = dumps(value).decode()
    return [name for name, secret in SECRETS.items() if secret in text]


def fields(row: Row) -> dict[str, Any]:
    return {name: getattr(row, name) for name in names(type(row))}


@pytest.mark.parametrize(
    ("name", "credential"),
    [
        ("Authorization", True), ("x-api-key", True), ("X-Goog-Api-Key", True), ("api-key", True),
        ("apiKey", True), ("APIKey", True), ("xapikey", True), ("auth", True), ("private_token", True),
        ("access_token", True), ("x-amz-security-token", True), ("client_secret", True),
        ("password", True), ("Cookie", True), ("set-cookie", True), ("ocp-apim-subscription-key", True),
        ("X-Amz-Signature", True), ("sig", True), (LONG_NAME, True), ("credentials", True),
        ("max_tokens", False), ("input_tokens", False), ("promptTokenCount", False),
        ("budget_tokens", False), ("tokenizer", False), ("x-ratelimit-remaining-tokens", False),
        ("anthropic-ratelimit-tokens-limit", False), ("prompt_cache_key", False), ("author", False),
        ("content-type", False), ("model", False), ("monkey", False), ("token_type", False),
    ],
)  # fmt: skip
def test_one_vocabulary_names_credentials(name: str, credential: bool) -> None:
    assert is_credential(name) is credential


def test_reasoning_signatures_in_bodies_are_not_credentials() -> None:
    assert is_credential("signature")  # a signed URL's
    assert not is_secret_field("signature")  # Anthropic's thinking block: a replay needs it
    assert not is_secret_field("thoughtSignature")


def rows_with_secrets_everywhere() -> list[Row]:
    tool_result = json.dumps({"api_key": SECRETS["tool"], "rows": 3})
    nested_twice = json.dumps({"content": json.dumps({"password": SECRETS["nested"]})})
    raw_body = (
        '{{"model": "gpt-4.1", "api\\u005fkey": "{}", "{}": "{}", "credentials": ["{}", "x"], '
        '"auth": {{"user": "me", "pass": "{}"}}, "messages": [{{"role": "tool", "content": {}}}], '
        '"max_tokens": 100}}'
    ).format(
        SECRETS["escaped"], LONG_NAME, SECRETS["long"], SECRETS["list"], SECRETS["object"],
        json.dumps(nested_twice),
    )  # fmt: skip
    url = f"https://api.example.com/v1/chat?auth={SECRETS['auth']}&private_token={SECRETS['private']}&n=1"
    return [
        RunRow(
            id="run_1", model=KEY, first_message=f"my key is {KEY}, keep it safe",
            classification_reason=f"saw {TOKEN}", endpoint=url,
            error={"class": "auth_error", "message": f"Incorrect API key provided: {TOKEN}"},
        ),
        StepRow(
            id="stp_1", run_id="run_1",
            request={
                "messages": [
                    {"role": "user", "parts": [{"type": "text", "text": f"{KEY}"}]},
                    {"role": "tool", "parts": [{"type": "tool_result", "content": tool_result}]},
                    {"role": "tool", "parts": [{"type": "text", "text": nested_twice}]},
                ],
                "options": {"max_output_tokens": 256, "credentials": [SECRETS["list"], {"a": SECRETS["object"]}]},
            },
            response={"parts": [{"type": "tool_call", "arguments": {"password": SECRETS["object"]}}]},
            usage={"input_tokens": 10},
        ),
        AttemptRow(
            id="att_1", step_id="stp_1", run_id="run_1", url=url,
            request_headers={"authorization": f"Bearer {TOKEN}", "x-note": KEY, "content-type": "application/json"},
            response_headers={"x-echo": f"https://gen.example.com/v1beta/models/m?key={SECRETS['gemini']}"},
            error={"message": f"upstream said: {TOKEN} is invalid", "details": [{"auth": [SECRETS['list']]}]},
        ),
        BodyRow(
            id="att_1",
            request_body=raw_body,
            response_body='data: {"choices": [{"delta": {"content": "x"}}], "token": "' + SECRETS["cut"],
        ),
    ]  # fmt: skip


def test_the_choke_point_alone_scrubs_every_field_type() -> None:
    redactor = Redactor(Learned())
    rows = rows_with_secrets_everywhere()
    assert leaks([fields(r) for r in rows])  # the fixture does carry them
    # Rows in the order the tracker sends them: the attempt's headers teach the opaque token,
    # so the run row sent again afterwards (as every run row is) is scrubbed of it too.
    scrubbed = [redactor.row(r) for r in (rows[2], *rows, rows[0])]
    assert leaks([fields(r) for r in scrubbed]) == []
    run, step, attempt, body = scrubbed[1:5]
    assert run.first_message == f"my key is {REDACTED}, keep it safe"
    assert run.model == REDACTED
    assert step.usage == {"input_tokens": 10}
    assert step.request["options"] == {"max_output_tokens": 256, "credentials": REDACTED}
    assert json.loads(step.request["messages"][1]["parts"][0]["content"]) == {"api_key": REDACTED, "rows": 3}
    assert attempt.request_headers["authorization"] == REDACTED
    assert attempt.request_headers["content-type"] == "application/json"
    assert "n=1" in attempt.url and "auth=[REDACTED]" in attempt.url
    assert attempt.error["details"] == [{"auth": REDACTED}]
    sent = json.loads(body.request_body)  # still the JSON it was, names as sent
    assert sent["api_key"] == sent[LONG_NAME] == sent["credentials"] == sent["auth"] == REDACTED
    assert sent["max_tokens"] == 100
    inner = json.loads(json.loads(sent["messages"][0]["content"])["content"])
    assert inner == {"password": REDACTED}
    assert rows[0].first_message and KEY in rows[0].first_message  # the caller's rows are untouched


def test_a_clean_row_is_passed_as_is() -> None:
    redactor = Redactor(Learned())
    row = StepRow(id="stp_1", run_id="run_1", request={"messages": [{"text": "hello"}], "max_tokens": 5})
    assert redactor.row(row) is row
    assert redactor.row(row) is row  # and found clean again without a scan


def test_a_value_learned_later_is_scrubbed_from_a_row_seen_clean_before() -> None:
    learned = Learned()
    redactor = Redactor(learned)
    row = RunRow(id="run_1", first_message=f"the code is {TOKEN} today and every day after it")
    assert redactor.row(row) is row
    learned.add(TOKEN)
    assert TOKEN not in (redactor.row(row).first_message or "")


def test_a_value_a_later_column_teaches_is_scrubbed_from_the_columns_before_it() -> None:
    """A step's request echoes a value its response names a credential: the request, scrubbed
    first, is scrubbed again once the response taught the value."""
    redactor = Redactor(Learned())
    echoed = "Zq8opaque77value"  # not key-shaped: only learning it can catch it elsewhere
    step = StepRow(
        id="stp_1",
        run_id="run_1",
        request={"messages": [{"text": f"the value is {echoed}, use it " + "and more " * 60}]},
        response={"content": [{"api_key": echoed}]},
    )
    scrubbed = redactor.row(step)
    assert echoed not in dumps(fields(scrubbed)).decode()
    assert scrubbed.response == {"content": [{"api_key": REDACTED}]}


def test_a_short_value_seen_clean_is_scrubbed_once_a_field_of_the_same_row_teaches_it() -> None:
    redactor = Redactor(Learned())
    echoed = "resp9opaque7value"  # a short column is probed once, then remembered clean
    assert redactor.row(StepRow(id="stp_1", run_id="run_1", response_id=echoed)).response_id == echoed
    # the same value, now also under a credential name in the row's own request
    taught = redactor.row(
        StepRow(id="stp_2", run_id="run_1", request={"api_key": echoed}, response_id=echoed)
    )
    assert taught.request == {"api_key": REDACTED}
    assert taught.response_id == REDACTED
    # and in any row after it
    assert redactor.row(StepRow(id="stp_3", run_id="run_1", response_id=echoed)).response_id == REDACTED


def test_the_learned_set_is_bounded_and_keeps_keys_in_use() -> None:
    learned = Learned(size=4)
    learned.add(KEY)
    for i in range(10):
        learned.add(f"one-time-value-{i:04d}")
        learned.add(KEY)  # seen on every request
    assert len(learned) == 4
    assert KEY in learned.forms
    assert "one-time-value-0000" not in learned.forms


class _NoPerFieldRedaction:
    """The pipeline's per-field helpers with their scrubbing switched off."""

    REDACTED = REDACTED

    @staticmethod
    def headers(items: Any) -> dict[str, str]:
        return {k.lower(): v for k, v in items}

    secret_values = staticmethod(lambda headers, url: set())
    url = staticmethod(lambda raw: raw)
    json_fields = staticmethod(lambda value, secrets=(): value)
    text = staticmethod(lambda raw, secrets=(): raw)


def test_the_real_pipeline_needs_no_per_field_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline_module, "redact", types.SimpleNamespace(**vars(_NoPerFieldRedaction)))
    rows: list[Row] = []
    redactor = Redactor(Learned())
    pipeline = Pipeline(lambda row: rows.append(redactor.row(row)))
    recorder = Recorder(pipeline)
    body = {
        "model": "gpt-4.1",
        "messages": [
            {"role": "user", "content": f"remember {KEY}"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
             "function": {"name": "db", "arguments": json.dumps({"password": SECRETS["object"]})}}]},
            {"role": "tool", "tool_call_id": "c1", "content": json.dumps({"api_key": SECRETS["tool"]})},
        ],
        "credentials": [SECRETS["list"]],
    }  # fmt: skip
    flow = tflow.tflow(
        req=tutils.treq(
            host="api.openai.com", port=443, scheme=b"https", method=b"POST",
            path=f"/v1/chat/completions?auth={SECRETS['auth']}".encode(), content=json.dumps(body).encode(),
        )
    )  # fmt: skip
    flow.request.headers.update({"content-type": "application/json", "authorization": f"Bearer {TOKEN}",
                                 "x-trace": SECRETS["gemini"]})  # fmt: skip
    recorder.requestheaders(flow)
    recorder.request(flow)
    flow.response = tutils.tresp(status_code=401, content=wire.openai_error(f"bad key {TOKEN}", "auth"))
    flow.response.headers["content-type"] = "application/json"
    recorder.responseheaders(flow)
    recorder.response(flow)
    while not pipeline._queue.empty():
        kind, exchange = pipeline._queue.get_nowait()
        (pipeline._start if kind == "start" else pipeline._finish)(exchange)
    assert {type(r).__name__ for r in rows} == {"RunRow", "StepRow", "AttemptRow", "BodyRow"}
    assert pipeline.counters.failed == 0
    recorded = dumps([fields(r) for r in rows]).decode()
    assert "remember [REDACTED]" in recorded
    assert leaks([fields(r) for r in rows]) == []


def test_log_records_are_scrubbed_message_and_exception(caplog: pytest.LogCaptureFixture) -> None:
    learned = Learned()
    learned.add(TOKEN)
    install_log_redaction(Redactor(learned))
    gemini = (
        f"https://generativelanguage.googleapis.com/v1beta/models/m:generateContent?key={SECRETS['gemini']}"
    )
    log = logging.getLogger("addons.pipeline")
    with caplog.at_level(logging.INFO):
        log.info("could not record %s %s", "POST", gemini)
        try:
            raise ValueError(f"upstream rejected {TOKEN} at {gemini}")
        except ValueError:
            log.exception("failed")
    text = caplog.text + "".join(logging.Formatter().format(r) for r in caplog.records)
    assert "key=[REDACTED]" in text
    assert SECRETS["gemini"] not in text and TOKEN not in text
    assert "ValueError: upstream rejected [REDACTED]" in text
    install_log_redaction(Redactor())  # back to the shared set


def test_the_pipeline_helpers_share_the_vocabulary() -> None:
    assert redact.url(f"https://x/y?private_token={TOKEN}&auth={TOKEN}&alt=sse") == (
        "https://x/y?private_token=[REDACTED]&auth=[REDACTED]&alt=sse"
    )
    assert redact.headers([("X-Api-Key", TOKEN), ("x-ratelimit-remaining-tokens", "5")]) == {
        "x-api-key": REDACTED,
        "x-ratelimit-remaining-tokens": "5",
    }
    assert redact.text(f'{{"auth": {{"token": "{TOKEN}"}}}}') == '{"auth": "[REDACTED]"}'


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"pin_password": 12345678, "n": 1}', '{"pin_password": "[REDACTED]", "n": 1}'),
        ('{"api_key": null, "ok": true}', '{"api_key": null, "ok": true}'),
        ('{"Authorization" : "Bearer abc"}', '{"Authorization" : "[REDACTED]"}'),
        ('data: {"x": 1, "secret": "s3cr3t-value"}\n\ndata: [DONE]', 'data: {"x": 1, "secret": "[REDACTED]"}\n\ndata: [DONE]'),
        ('{"tokens": ["a", "b"], "max_tokens": 5}', '{"tokens": ["a", "b"], "max_tokens": 5}'),
        ('{"auth": {"a": "}", "b": ["]"]}, "next": 1}', '{"auth": "[REDACTED]", "next": 1}'),
        ('{"content": "{\\"token\\": [\\"a\\", \\"b\\"], \\"k\\": 1}"}', '{"content": "{\\"token\\": \\"[REDACTED]\\", \\"k\\": 1}"}'),
        ("see https://u:hunter2hunter2@h.example/x?access_token=abc&alt=sse", "see https://u:[REDACTED]@h.example/x?access_token=[REDACTED]&alt=sse"),
        ("plain words about a key and a token: nothing to do", "plain words about a key and a token: nothing to do"),
    ],
)  # fmt: skip
def test_credentials_in_text(raw: str, expected: str) -> None:
    scrubbed = Redactor(Learned()).text(raw)
    assert scrubbed == expected
    assert Redactor(Learned()).text(scrubbed) == scrubbed  # scrubbing twice changes nothing more


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "hostile",
    [
        '"' + "key " * 60_000 + ":",  # a credential word everywhere, one far quote
        '{"a": "' + "token:" * 40_000 + '"}',
        "://" + "x" * 100_000 + " " + "://u:" * 20_000,
        '{"' + "k" * 300_000 + '_key": "v"}',  # a long name, once
    ],
)
def test_hostile_text_is_scrubbed_in_linear_time(hostile: str) -> None:
    """Bodies are the traffic's to choose: no scan may go back and forth over them."""
    Redactor(Learned()).text(hostile)
    assert redact.is_secret_field("k" * 300 + "_key")

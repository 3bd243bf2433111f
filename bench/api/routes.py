"""What is timed: the requests of every route (filters rotating over the data), and timing them."""

from __future__ import annotations

import math
import random
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from bench.api.seed import Catalog
from bench.api.serve import Client
from bench.api.traffic import ABSENT_TOPIC, ALL_MODELS, DAY, PROVIDERS, RARE_TOPIC, SPAN_DAYS
from proxy.api.params import encode_cursor
from storage.records import timestamp

if TYPE_CHECKING:
    from bench.api.probe import Probe

GOAL_MS = 50.0
NEAR_MS = 20.0  # routes at or above this p95 get their plans printed


@dataclass
class Scenario:
    name: str
    group: str  # list | detail | stats: the goal applies to list and detail
    paths: list[str]  # the requests, in order (cycled); for `follow`, the first page
    follow: str | None = None  # the list key: each request follows the previous page's next_cursor
    walk: bool = True  # for `follow`: first walk --depth pages in (else paths[0] holds a cursor)


@dataclass
class Result:
    scenario: Scenario
    times: list[float]
    paths: list[str]
    sizes: list[int]
    probe: Probe | None = None

    def pct(self, q: float) -> float:
        ordered = sorted(self.times)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    @property
    def misses(self) -> bool:
        return self.scenario.group != "stats" and self.pct(0.95) >= GOAL_MS

    def at_p95(self) -> str:
        """The path of the request at the 95th percentile: the one whose SQL is explained."""
        ranked = sorted(zip(self.times, self.paths, strict=True))
        return ranked[max(0, math.ceil(0.95 * len(ranked)) - 1)][1]


def q(path: str, **params: Any) -> str:
    return f"{path}?{urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})}"


def iso(epoch: float) -> str:
    return timestamp(epoch)


def scenarios(catalog: Catalog, rng: random.Random, n: int, end: float, q_common: str) -> list[Scenario]:
    def pick(ids: list[str]) -> list[str]:
        return [rng.choice(ids) for _ in range(n)] if ids else []

    run_ids, attempt_ids, conv_ids = pick(catalog.runs), pick(catalog.attempts), pick(catalog.conversations)
    big = rng.sample(catalog.big_runs, min(n, len(catalog.big_runs)))
    kinds = ["chat_turn", "title_generation", "compaction", "quickgen", "unknown"]
    statuses = ["completed", "error", "interrupted", "in_progress"]
    providers = list(PROVIDERS)
    start = end - SPAN_DAYS * DAY

    def cycle[T](values: Sequence[T]) -> Iterator[T]:
        return (values[i % len(values)] for i in range(n))

    def window() -> tuple[str, str]:
        hours = rng.choice([1, 6, 24])
        since = rng.uniform(start, end - hours * 3600)
        return iso(since), iso(since + hours * 3600)

    def oldest(keys: list[tuple[str, str]]) -> str:
        """A cursor n+1 pages before the oldest row: the timed pages walk to the very end."""
        key = keys[min(len(keys) - 1, 50 * (n + 1))]
        return encode_cursor(key[0], key[1])

    runs = "/api/v1/runs"
    windows = [window() for _ in range(n)]
    old_run = oldest(catalog.oldest_runs)
    old_conv = oldest(catalog.oldest_conversations)
    strangers = [  # a provider with a model it never serves: filters that match nothing
        (p, m) for p in providers for m in ALL_MODELS if m not in {x.name for x, _ in PROVIDERS[p][1]}
    ]
    rng.shuffle(strangers)
    pairs = [(k, s) for k in kinds for s in statuses]
    week = iso(end - 7 * DAY)
    out = [
        Scenario("runs: first page (limit 50)", "list", [runs]),
        Scenario("runs: kind", "list", [q(runs, kind=k) for k in cycle(kinds)]),  # 5 kinds in turn
        Scenario("runs: status", "list", [q(runs, status=s) for s in cycle(statuses)]),  # 4 statuses
        Scenario("runs: conversation_id", "list", [q(runs, conversation_id=c) for c in conv_ids]),
        Scenario("runs: provider", "list", [q(runs, provider=p) for p in cycle(providers)]),
        Scenario("runs: model", "list", [q(runs, model=m) for m in cycle(ALL_MODELS)]),
        Scenario("runs: has_error=true", "list", [q(runs, has_error="true")]),
        Scenario("runs: has_error=false", "list", [q(runs, has_error="false")]),
        Scenario(
            "runs: since/until (1-24 h window)", "list", [q(runs, since=s, until=u) for s, u in windows]
        ),
        Scenario("runs: since (last 7 days)", "list", [q(runs, since=week)]),
        Scenario(f"runs: q={q_common} (common)", "list", [q(runs, q=q_common)]),
        Scenario(f"runs: q={RARE_TOPIC} (rare)", "list", [q(runs, q=RARE_TOPIC)]),
        Scenario(f"runs: q={ABSENT_TOPIC} (no match)", "list", [q(runs, q=ABSENT_TOPIC)]),
        Scenario(
            "runs: kind+provider+has_error",
            "list",
            [
                q(runs, kind=k, provider=p, has_error="true")
                for k, p in zip(cycle(kinds[:2]), cycle(providers), strict=True)
            ],
        ),
        Scenario(
            "runs: kind+status (all pairs)", "list", [q(runs, kind=k, status=s) for k, s in cycle(pairs)]
        ),
        Scenario(
            "runs: model+status+since/until",
            "list",
            [
                q(runs, model=m, status="completed", since=w[0], until=w[1])
                for m, w in zip(cycle(ALL_MODELS), windows, strict=True)
            ],
        ),
        Scenario(
            "runs: model+has_error=true",
            "list",
            [q(runs, model=m, has_error="true") for m in cycle(ALL_MODELS)],
        ),
        Scenario(
            "runs: provider+model, no match",
            "list",
            [q(runs, provider=p, model=m) for p, m in cycle(strangers)],
        ),
        Scenario(
            "runs: conversation_id+kind",
            "list",
            [q(runs, conversation_id=c, kind="chat_turn") for c in conv_ids],
        ),
        Scenario("runs: deep page (after 200 pages)", "list", [runs], follow="runs"),
        Scenario("runs: deep page, kind=chat_turn", "list", [q(runs, kind="chat_turn")], follow="runs"),
        Scenario(
            "runs: oldest pages (30 days back)", "list", [q(runs, cursor=old_run)], follow="runs", walk=False
        ),
        Scenario("run detail", "detail", [f"{runs}/{r}" for r in run_ids]),
        Scenario("run detail (>= 6 steps, >= 8 attempts)", "detail", [f"{runs}/{r}" for r in big]),
        Scenario("attempt detail", "detail", [f"/api/v1/attempts/{a}" for a in attempt_ids]),
        Scenario("conversations: first page", "list", ["/api/v1/conversations"]),
        Scenario(
            "conversations: deep page (after 200 pages)",
            "list",
            ["/api/v1/conversations"],
            follow="conversations",
        ),
        Scenario(
            "conversations: oldest pages",
            "list",
            [q("/api/v1/conversations", cursor=old_conv)],
            follow="conversations",
            walk=False,
        ),
        Scenario("stats: default (last 24 h)", "stats", ["/api/v1/stats"]),
        Scenario("stats: 30 days", "stats", [q("/api/v1/stats", since=iso(start - 60), until=iso(end))]),
    ]
    return out


def with_cursor(path: str, cursor: str) -> str:
    base, _, query = path.partition("?")
    params = [(k, v) for k, v in urllib.parse.parse_qsl(query) if k != "cursor"] + [("cursor", cursor)]
    return f"{base}?{urllib.parse.urlencode(params)}"


def run_scenario(client: Client, scenario: Scenario, n: int, budget: float, depth: int) -> Result:
    result = Result(scenario, [], [], [])
    path = scenario.paths[0]
    if scenario.follow and scenario.walk:  # walk `depth` pages in, untimed; then time the pages after
        for _ in range(depth):
            _, body = client.get(path)
            if (cursor := orjson.loads(body)["next_cursor"]) is None:
                break  # a small database: fewer pages than `depth`
            path = with_cursor(path, cursor)
    t0 = time.perf_counter()
    for i in range(n):
        if not scenario.follow:
            path = scenario.paths[i % len(scenario.paths)]
        elapsed, body = client.get(path)
        result.times.append(elapsed)
        result.paths.append(path)
        result.sizes.append(len(body))
        if scenario.follow:
            cursor = orjson.loads(body)["next_cursor"]
            if cursor is None:
                break
            path = with_cursor(path, cursor)
        if time.perf_counter() - t0 > budget and i >= 4:
            break
    return result

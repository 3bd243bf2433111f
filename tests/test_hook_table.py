"""The hook table dispatches as mitmproxy's own addon manager does: same methods, same order,
same arguments, errors logged, `AddonHalt` honoured, addons added or removed later seen."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest
from mitmproxy import exceptions, http
from mitmproxy.addonmanager import AddonManager
from mitmproxy.master import Master
from mitmproxy.proxy.layers.http import HttpRequestHook, HttpResponseHook
from mitmproxy.test import tflow

from proxy.hook_table import HookTable

Calls = list[tuple[str, str, str]]


class Probe:
    def __init__(self, name: str, calls: Calls, *, fail: bool = False, halt: bool = False) -> None:
        self.name, self.calls, self.fail, self.halt = name, calls, fail, halt

    def request(self, flow: http.HTTPFlow) -> None:
        self.calls.append((self.name, "request", flow.id))
        if self.fail:
            raise RuntimeError(f"{self.name} failed")
        if self.halt:
            raise exceptions.AddonHalt()

    async def response(self, flow: http.HTTPFlow) -> None:
        await asyncio.sleep(0)  # an async hook, awaited before the next addon's
        self.calls.append((self.name, "response", flow.id))

    def update(self, flows: list[http.HTTPFlow]) -> None:
        self.calls.append((self.name, "update", ",".join(f.id for f in flows)))


async def dispatched(manager_type: type[AddonManager], build: object) -> Calls:
    master = Master(None)
    master.addons = manager_type(master)
    calls: Calls = []
    build(master.addons, calls)  # type: ignore[operator]
    flow = tflow.tflow(resp=True)
    flow.id = "f1"
    await master.addons.handle_lifecycle(HttpRequestHook(flow))
    await master.addons.handle_lifecycle(HttpResponseHook(flow))
    return calls


class Unwatched:
    """An addon without `update`: with only such addons, no `update` is dispatched at all."""

    def __init__(self, name: str, calls: Calls) -> None:
        self.name, self.calls = name, calls

    def response(self, flow: http.HTTPFlow) -> None:
        self.calls.append((self.name, "response", flow.id))


def _unplaced(message: str) -> str:
    return re.sub(r" at 0x[0-9a-f]+", "", message)  # objects' addresses differ between runs


def three(addons: AddonManager, calls: Calls) -> None:
    addons.add(Probe("a", calls), Probe("b", calls, fail=True), Probe("c", calls))


def halting(addons: AddonManager, calls: Calls) -> None:
    addons.add(Probe("a", calls), Probe("b", calls, halt=True), Probe("c", calls))


def misnamed(addons: AddonManager, calls: Calls) -> None:
    """An addon with a hook's name on something that is not a method: an error, not a halt."""
    odd = Probe("odd", calls)
    odd.request = "not callable"  # type: ignore[assignment,method-assign]
    addons.add(Probe("a", calls), odd, Probe("c", calls))


def unwatched(addons: AddonManager, calls: Calls) -> None:
    addons.add(Unwatched("a", calls), Unwatched("b", calls))


@pytest.mark.parametrize("build", [three, halting, misnamed])
async def test_the_table_calls_what_mitmproxy_calls(build: object, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        expected = await dispatched(AddonManager, build)
        theirs = [_unplaced(r.getMessage()) for r in caplog.records]
        caplog.clear()
        got = await dispatched(HookTable, build)
        ours = [_unplaced(r.getMessage()) for r in caplog.records]
    assert got == expected
    assert ours == theirs  # an addon's error is logged, and the next addon still called
    assert ("c", "response", "f1") in got
    assert (("c", "request", "f1") in got) is (build is not halting)  # AddonHalt stops that hook only
    assert bool(ours) is (build is not halting)


async def test_update_is_dispatched_only_while_an_addon_implements_it() -> None:
    expected = await dispatched(AddonManager, unwatched)
    assert (
        await dispatched(HookTable, unwatched)
        == expected
        == [("a", "response", "f1"), ("b", "response", "f1")]
    )
    master = Master(None)
    table = master.addons = HookTable(master)
    calls: Calls = []
    table.add(Unwatched("a", calls))
    flow = tflow.tflow(resp=True)
    await table.handle_lifecycle(HttpResponseHook(flow))
    table.add(Probe("watching", calls))
    await table.handle_lifecycle(HttpResponseHook(flow))
    assert [hook for name, hook, _ in calls if name == "watching"] == ["response", "update"]


async def test_addons_added_or_removed_after_a_dispatch_are_seen() -> None:
    master = Master(None)
    table = master.addons = HookTable(master)
    calls: Calls = []
    first = Probe("first", calls)
    table.add(first)
    flow = tflow.tflow()
    await table.handle_lifecycle(HttpRequestHook(flow))
    later = Probe("later", calls)
    table.add(later)
    await table.handle_lifecycle(HttpRequestHook(flow))
    table.remove(first)
    await table.handle_lifecycle(HttpRequestHook(flow))
    assert [name for name, hook, _ in calls if hook == "request"] == ["first", "first", "later", "later"]

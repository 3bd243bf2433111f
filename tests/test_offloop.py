"""The threads beside the proxy's loop: each its own, and the GIL's switch interval shortened
only while any of them works."""

from __future__ import annotations

import asyncio
import sys
import threading

from addons import offloop


async def test_each_kind_of_work_has_its_own_thread_and_none_waits_behind_another() -> None:
    """A long read on the recording thread does not hold a scrub or a reader's page."""
    release = threading.Event()
    names: dict[str, str] = {}

    def long_read() -> None:
        names["read"] = threading.current_thread().name
        release.wait(10)

    def named(kind: str) -> None:
        names[kind] = threading.current_thread().name

    reading = asyncio.ensure_future(offloop.beside(long_read))
    await asyncio.wait_for(offloop.writing(lambda: named("scrub")), 5)
    await asyncio.wait_for(offloop.reading(lambda: named("page")), 5)
    assert not reading.done()  # both finished while the read still held its thread
    release.set()
    await reading
    assert names["read"].startswith("chatdebug-recording")
    assert names["scrub"].startswith("chatdebug-writing")
    assert names["page"].startswith("chatdebug-reading")


async def test_the_switch_interval_is_short_while_any_thread_works_and_restored_after_the_last() -> None:
    before = sys.getswitchinterval()
    assert before > offloop.SWITCH_SECONDS
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: list[float] = []

    def first() -> None:
        first_in.set()
        second_in.wait(5)
        seen.append(sys.getswitchinterval())

    def second() -> None:
        first_in.wait(5)
        second_in.set()
        first_out.wait(5)  # the first is done: the interval must stay short for this one
        seen.append(sys.getswitchinterval())

    one = asyncio.ensure_future(offloop.beside(first))
    two = asyncio.ensure_future(offloop.reading(second))
    await one
    first_out.set()
    await two
    assert seen == [offloop.SWITCH_SECONDS, offloop.SWITCH_SECONDS]
    assert sys.getswitchinterval() == before

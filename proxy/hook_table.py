"""mitmproxy's addon manager with hook dispatch read from a table.

mitmproxy dispatches each hook by walking every addon (and its children) and asking each for a
method of the hook's name, in a context manager, a coroutine and two generators per addon; and
after every flow hook it dispatches `update` the same way, which no addon of ours implements.
With seven addons and about ten flow hooks a call, that walk is ~9 % of the proxy's CPU per call
(py-spy). The table lists, per hook name, the methods that implement it, built at the first
dispatch of that name and rebuilt whenever an addon is added or removed: the same methods are
called in the same order with the same arguments, an exception is logged as mitmproxy logs it,
and `AddonHalt` stops the hook's dispatch as it does there.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

from mitmproxy import exceptions, flow, hooks
from mitmproxy.addonmanager import AddonManager

log = logging.getLogger("mitmproxy.addonmanager")  # where mitmproxy logs an addon's error


@functools.cache
def _fields(hook: type[hooks.Hook]) -> tuple[str, ...]:
    """A hook's arguments are its dataclass fields, in order (`Hook.args` asks for them anew)."""
    return tuple(f.name for f in dataclasses.fields(hook))


class HookTable(AddonManager):
    def __init__(self, master: Any) -> None:
        super().__init__(master)
        self._handlers: dict[str, tuple[Callable[..., Any], ...]] = {}

    def register(self, addon: Any) -> Any:
        self._handlers.clear()
        return super().register(addon)

    def add(self, *addons: Any) -> None:
        super().add(*addons)
        self._handlers.clear()  # again: an addon joins the chain only after its registration

    def remove(self, addon: Any) -> None:
        self._handlers.clear()
        super().remove(addon)

    def clear(self) -> None:
        self._handlers.clear()
        super().clear()

    def handlers(self, event: hooks.Hook) -> tuple[Callable[..., Any], ...]:
        found = self._handlers.get(event.name)
        if found is None:
            methods: list[Callable[..., Any]] = []
            for addon in self.chain:
                try:
                    methods += [func for _, func in self._iter_hooks(addon, event)]
                except exceptions.AddonManagerError as e:  # a hook's name on something not callable
                    log.error(f"Addon error: {e}")  # as mitmproxy says it; the other addons go on
            found = self._handlers[event.name] = tuple(methods)
        return found

    async def handle_lifecycle(self, event: hooks.Hook) -> None:
        """As mitmproxy's: the hook, then `update` with its flow, only asked for when an addon
        implements `update` (none of ours does: the hook of every flow event built and
        dispatched for nothing)."""
        await self.trigger_event(event)
        updates = self._handlers.get("update")
        if updates is None:
            updates = self.handlers(hooks.UpdateHook([]))
        if updates:
            message = getattr(event, _fields(type(event))[0])
            if isinstance(message, flow.Flow):
                await self.trigger_event(hooks.UpdateHook([message]))

    async def trigger_event(self, event: hooks.Hook) -> None:
        handlers = self.handlers(event)
        if not handlers:
            return
        args = [getattr(event, name) for name in _fields(type(event))]  # as `Hook.args`, cached
        for func in handlers:
            try:
                result = func(*args)
                if result is not None and inspect.isawaitable(result):
                    await result
            except exceptions.AddonHalt:
                return
            except exceptions.OptionsError:
                raise
            except Exception as e:
                log.error(f"Addon error: {e}", exc_info=True)

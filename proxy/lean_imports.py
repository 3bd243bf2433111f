"""Packages imported without their `__init__`, which loads what the sidecar never uses.

Each stays in memory for good, so what a package's `__init__` pulls in beside the submodules we
use is paid by every sidecar (RSS measured in a process that has mitmproxy loaded already):

- `mitmproxy.addons`: ~11 MiB. It imports all of DumpMaster's default addons (Flask for the
  onboarding app, ldap3 for proxy auth, ...); we load four.
- `aiohttp`: 3.5 MiB. It imports the HTTP client; the API only serves (`aiohttp.web`).
- `genai_prices`: 1.1 MiB. It imports the price updater and the `httpx2` it fetches with; the
  sidecar prices offline, from the table the package ships (`addons/cost.py`).

A package registered here is an empty module whose submodules import alone, as usual. Anything
else asked of the package itself (what its `__init__` defines) runs the `__init__` then: nothing
breaks, only that saving is lost. `install` must run before anything imports them.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib.metadata import version
from typing import Any


def install() -> None:
    alone("mitmproxy.addons")
    alone("aiohttp", __version__=version("aiohttp"))  # aiohttp.http imports it from the package
    alone("genai_prices", __version__=version("genai-prices"))


def alone(name: str, **attributes: Any) -> None:
    """Registers package `name` without running its `__init__`; `attributes` are set on it."""
    if name in sys.modules:
        return  # imported already: nothing to save
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        return
    package = importlib.util.module_from_spec(spec)
    package.__dict__.update(attributes)
    loader = spec.loader

    def attribute(attr: str) -> Any:
        if attr.startswith("__") or importlib.util.find_spec(f"{name}.{attr}") is not None:
            raise AttributeError(attr)  # a submodule: the import system loads it alone
        del package.__dict__["__getattr__"]
        loader.exec_module(package)
        return getattr(package, attr)

    package.__dict__["__getattr__"] = attribute
    sys.modules[name] = package

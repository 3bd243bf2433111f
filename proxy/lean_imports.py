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

import importlib
import importlib.util
import sys
import threading
from importlib.metadata import PackageNotFoundError, version
from typing import Any


def install() -> None:
    alone("mitmproxy.addons")
    # aiohttp.http imports `__version__` from the package; cost.py names genai-prices' version
    alone("aiohttp", __version__=_version("aiohttp"))
    alone("genai_prices", __version__=_version("genai-prices"))


def alone(name: str, **attributes: Any) -> None:
    """Registers package `name` without running its `__init__`; `attributes` are set on it. A
    package imported already, or an attribute that cannot be known (None), leaves it as it is."""
    if name in sys.modules or None in attributes.values():
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        return
    package = importlib.util.module_from_spec(spec)
    package.__dict__.update(attributes)
    loader = spec.loader
    lock = threading.Lock()

    def attribute(attr: str) -> Any:
        if attr.startswith("__") and attr != "__all__":
            raise AttributeError(attr)  # probes (`__wrapped__`, ...) that the package lacks
        if _submodule(f"{name}.{attr}"):
            return importlib.import_module(f"{name}.{attr}")  # as the `__init__` would bind it
        with lock:  # once, whoever asks first
            if package.__dict__.pop("__getattr__", None) is not None:
                loader.exec_module(package)
        return getattr(package, attr)

    package.__dict__["__getattr__"] = attribute
    sys.modules[name] = package


def _submodule(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a name no module can have
        return False


def _version(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:  # no metadata (a frozen build): the package loads whole
        return None

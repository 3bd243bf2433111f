"""What the sidecar imports stays out of memory when it is never used (`proxy/lean_imports.py`),
and asking for it still works."""

from __future__ import annotations

import subprocess
import sys

NEVER_USED = ("flask", "ldap3", "aiohttp.client", "aiohttp.connector", "httpx2", "genai_prices.update_prices")


def run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_sidecar_loads_none_of_what_it_never_uses() -> None:
    # what `chatdebug run` imports before it serves, and a price computed as a call's would be
    loaded = run(
        "import sys, time, proxy.cli, proxy.app, addons.cost\n"
        "from addons.normalized import Usage\n"
        "cost = addons.cost.Prices().cost('openai', 'gpt-4.1', Usage(input_tokens=10, output_tokens=2), time.time())\n"
        "assert cost is not None and cost.total > 0, cost\n"
        f"print(','.join(m for m in {NEVER_USED!r} if m in sys.modules))"
    )
    assert loaded == ""


def test_what_a_package_itself_defines_is_still_there_when_asked() -> None:
    out = run(
        "import proxy, aiohttp, genai_prices\n"
        "from aiohttp import web\n"
        "print(aiohttp.__version__, genai_prices.update_prices.__name__, aiohttp.ClientSession.__name__,"
        " web.Application.__name__, genai_prices.calc_price.__name__, len(aiohttp.__all__) > 10)"
    )
    version, *names = out.split()
    assert version[0].isdigit()
    # a submodule the `__init__` would have bound, then names only the `__init__` defines
    assert names == ["genai_prices.update_prices", "ClientSession", "Application", "calc_price", "True"]

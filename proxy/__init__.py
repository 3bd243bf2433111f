"""The chatdebug process: CLI, settings, embedded mitmproxy and the query API."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("chatdebug-proxy")
except PackageNotFoundError:  # run from a source tree that was never installed
    VERSION = "unknown"

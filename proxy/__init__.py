"""The chatdebug process: CLI, settings, embedded mitmproxy and the query API."""

from importlib.metadata import PackageNotFoundError, version

from proxy import lean_imports

lean_imports.install()  # first: before anything of ours imports those packages

try:
    VERSION = version("chatdebug-proxy")
except PackageNotFoundError:  # run from a source tree that was never installed
    VERSION = "unknown"

"""The chatdebug process: CLI, settings, embedded mitmproxy and the query API."""

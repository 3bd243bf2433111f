"""The query API benchmark (`bench/api_bench.py`), one job per module: `traffic` plans a month of
calls, `calls` turns a plan into the tracker's calls, `seed` drives the tracker and writers into
each database, `serve` runs the API in a child process, `routes` times every route, `probe` and
`what_if` explain SQLite's SQL, `report` prints."""

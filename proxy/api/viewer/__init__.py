"""The built-in viewer for people: server-rendered pages over the same store the API reads.

This package holds only the names the API's auth middleware needs; the pages are in `routes`.
"""

from __future__ import annotations

from pathlib import Path

COOKIE = "chatdebug_token"
STATIC = Path(__file__).parent / "static"
# reachable without the token: the login form and what it needs to render
OPEN_PATHS = ("/login", *(f"/static/{p.name}" for p in sorted(STATIC.iterdir()) if p.is_file()))

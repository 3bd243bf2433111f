"""Stable placeholders for what identifies the machine a capture was made on.

Keys, device ids, account ids, the throw-away home and work paths, the user and host names and
the fake provider's ephemeral port are replaced throughout a serialized fixture line. Ids keep
their shape (a 64-hex device id becomes another 64-hex string), so parsers see what they would
see in the wild; session ids are random per capture and are kept as sent.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.realapps.env import ANTHROPIC_KEY, GEMINI_KEY, OPENAI_KEY, Bench

PLACEHOLDER_HOME = "/home/dev"
PLACEHOLDER_PORT = "9443"
KEYS = {
    ANTHROPIC_KEY: "sk-ant-api03-" + "X" * (len(ANTHROPIC_KEY) - 13),
    OPENAI_KEY: "sk-proj-" + "X" * (len(OPENAI_KEY) - 8),
    GEMINI_KEY: "AIza" + "X" * (len(GEMINI_KEY) - 4),
}
_DEVICE = re.compile(r'device_id\\*"\s*:\s*\\*"([0-9a-f]{16,})')
_INSTALLATION = re.compile(r'installation_id\\*"\s*:\s*\\*"([0-9a-f-]{8,})')
_ACCOUNT = re.compile(r'account_uuid\\*"\s*:\s*\\*"([0-9a-f-]{8,})')


def _shaped(value: str, salt: str) -> str:
    """A fake of the same length and alphabet (hex stays hex, dashes stay where they were)."""
    digest = hashlib.sha256((salt + value).encode()).hexdigest() * 4
    out, i = [], 0
    for ch in value:
        if ch in "-_":
            out.append(ch)
        else:
            out.append(digest[i])
            i += 1
    return "".join(out)


@dataclass
class Redactor:
    swaps: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def for_bench(cls, bench: Bench, calls: list[dict[str, Any]]) -> Redactor:
        root = str(bench.root)
        swaps: list[tuple[str, str]] = list(KEYS.items())
        for app in ("claude", "codex", "opencode", "gemini"):
            swaps.append((f"{root}/{app}-home", PLACEHOLDER_HOME))
            swaps.append((f"{root}/{app}-work", f"{PLACEHOLDER_HOME}/project"))
        swaps.append((root, "/tmp/chatdebug-apps"))
        # Claude Code names its per-project directories after the path, slashes as dashes
        swaps += [(old.replace("/", "-"), new.replace("/", "-")) for old, new in swaps if old.startswith("/")]
        swaps.append((f"127.0.0.1:{bench.server.port}", f"127.0.0.1:{PLACEHOLDER_PORT}"))
        text = "\n".join(json.dumps([c.get("body"), c.get("headers")]) for c in calls)
        for pattern, salt in ((_DEVICE, "device"), (_ACCOUNT, "account"), (_INSTALLATION, "installation")):
            for value in sorted(set(pattern.findall(text))):
                swaps.append((value, _shaped(value, salt)))
        real_home = str(Path.home())
        swaps += [
            (f'"{real_home}"', f'"{PLACEHOLDER_HOME}"'),
            (f'\\"{real_home}\\"', f'\\"{PLACEHOLDER_HOME}\\"'),
        ]
        host = socket.gethostname()
        if len(host) >= 4:
            swaps.append((host, "devbox"))
        user = getpass.getuser()
        if len(user) >= 4 and user not in ("user", "test"):
            swaps.append((f"/home/{user}", PLACEHOLDER_HOME))
        swaps.sort(key=lambda s: -len(s[0]))  # longest first: a path before its prefix
        return cls(swaps)

    def apply(self, text: str) -> str:
        for old, new in self.swaps:
            text = text.replace(old, new)
        return text

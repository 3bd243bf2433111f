"""One chat call through chatdebug: HTTPS_PROXY points at the sidecar, and its CA is trusted
in addition to the system roots (hosts the sidecar only tunnels keep their real certificates)."""

from __future__ import annotations

import os
import ssl

import openai


def main() -> None:
    trust = ssl.create_default_context()  # the system roots
    trust.load_verify_locations(os.environ.get("CHATDEBUG_CA", "/chatdebug-ca/ca.pem"))
    client = openai.OpenAI(http_client=openai.DefaultHttpxClient(verify=trust))  # HTTPS_PROXY from env
    reply = client.chat.completions.create(
        model="gpt-4.1-mini", messages=[{"role": "user", "content": "Say hello through chatdebug"}]
    )
    print(reply.choices[0].message.content)


if __name__ == "__main__":
    main()

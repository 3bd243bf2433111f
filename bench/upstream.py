"""The benchmark's LLM provider: an HTTPS OpenAI Chat Completions endpoint on 127.0.0.1.

Run as its own process (so it never shares a GIL with the load generator):

    python bench/upstream.py --cert CERT.pem --key KEY.pem

It prints `upstream ready port=N` on stdout once it listens. Bodies are byte-accurate OpenAI
responses from `tests/wire.py`, built once at start so the upstream costs next to nothing:

- `stream: false` -> one `chat.completion` JSON body with a Content-Length;
- `stream: true`  -> a chunked `text/event-stream` of STREAM_EVENTS events (role, text deltas,
  finish, usage, `[DONE]`), one write per event, EVENT_GAP seconds apart.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys
from pathlib import Path

import orjson
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.wire import openai_completion, openai_stream, openai_usage  # noqa: E402

STREAM_EVENTS = 50
EVENT_GAP = 0.002  # seconds between two events of a stream
MODEL = "gpt-4.1-2025-04-14"

_TEXT = (
    "The capital of France is Paris. It has been the country's political, economic and cultural "
    "centre for centuries, and it is home to institutions such as the Louvre and the Sorbonne."
)
# role + text deltas + finish + usage + [DONE] = STREAM_EVENTS
_PIECES = [f"word{i} " for i in range(STREAM_EVENTS - 4)]

COMPLETION = openai_completion(_TEXT, usage=openai_usage(412, 38), model=MODEL)
EVENTS = openai_stream(_PIECES, usage=openai_usage(412, len(_PIECES)), model=MODEL)
assert len(EVENTS) == STREAM_EVENTS


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = orjson.loads(await request.read())
    if not body.get("stream"):
        return web.Response(body=COMPLETION, content_type="application/json")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    for i, event in enumerate(EVENTS):
        if i:
            await asyncio.sleep(EVENT_GAP)
        await response.write(event)
    await response.write_eof()
    return response


async def ping(_: web.Request) -> web.Response:
    return web.Response(text="pong")


async def serve(cert: Path, key: Path, port: int) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/ping", ping)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=context, backlog=1024)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"upstream ready port={bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--cert", type=Path, required=True, help="PEM certificate chain for 127.0.0.1")
    p.add_argument("--key", type=Path, required=True, help="PEM private key")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    args = p.parse_args()
    asyncio.run(serve(args.cert, args.key, args.port))


if __name__ == "__main__":
    main()

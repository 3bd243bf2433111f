"""Same load, four targets: direct, bare mitmdump, chatdebug-proxy and the LiteLLM proxy.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/proxy_bench.py            # about 70 s on 2 cores

Everything runs on 127.0.0.1: a local HTTPS OpenAI upstream (bench/upstream.py, its own
process, trustme certificate), the proxy under test (its own process) and the load generator
(this process, httpx with keep-alive). Every load is bounded in count and in time. The output
starts with the machine, then one markdown table; see bench/README.md for the columns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import itertools
import math
import os
import platform
import shutil
import signal
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import psutil
import trustme

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MODEL = "gpt-4.1"  # what clients ask for; LiteLLM maps it to openai/<upstream model>
FAKE_KEY = "sk-bench-FAKEKEY0123456789abcdefghijkl"
STREAM_EVENTS = 50  # bench/upstream.py sends this many, 2 ms apart
SYSTEM_PROMPT = (
    "You are a concise assistant for a travel agency. Answer in one or two sentences, cite no "
    "sources, and never invent prices. If a question is about bookings, say that a human agent "
    "will follow up. " * 3
)
TARGETS = ("direct", "mitmdump", "chatdebug", "litellm")
LABELS = {
    "direct": "direct (no proxy)",
    "mitmdump": "bare mitmdump",
    "chatdebug": "chatdebug-proxy",
    "litellm": "LiteLLM proxy",
}


# ---- configuration and results ---------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    warmup: int = 30
    sequential: int = 300
    sequential_seconds: float = 60.0
    clients: int = 32
    concurrent: int = 2000
    concurrent_seconds: float = 20.0
    streams: int = 30
    stream_warmup: int = 3
    stream_seconds: float = 60.0


@dataclass
class Endpoint:
    """Where a client sends its chat completions, and what it trusts."""

    url: str
    verify: ssl.SSLContext
    proxy: str | None = None
    pid: int | None = None  # the process whose tree is sampled (None: nothing in between)
    database: Path | None = None  # chatdebug's SQLite file, for the ingest rate


@dataclass
class Ingest:
    attempts: int  # attempts of the throughput phase that landed in the database
    sent: int  # requests of that phase that got a 200
    rate: float  # attempts per second of wall time, from the phase's start to the last landing
    lag: float  # seconds from the phase's end until the last attempt landed


@dataclass
class Result:
    target: str
    skipped: str | None = None
    seq_ms: list[float] = field(default_factory=list)
    rps: float | None = None
    cpu_ms_per_request: float | None = None
    ttfb_ms: list[float] = field(default_factory=list)
    stream_ms: list[float] = field(default_factory=list)
    stream_events: Counter[int] = field(default_factory=Counter)
    peak_rss: int | None = None
    ingest: Ingest | None = None
    errors: Counter[str] = field(default_factory=Counter)
    bystanders: float | None = None  # cores used by other processes while this target ran


# ---- processes ---------------------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    """This environment without proxies or chatdebug settings, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if "PROXY" not in k.upper() and not k.startswith(("CHATDEBUG_", "LITELLM_", "SSL_CERT"))
    }
    return env | extra


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def spawn(cls, name: str, args: list[str], workdir: Path, env: dict[str, str]) -> Service:
        log_path = workdir / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                args, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        return cls(name, process, log_path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 12) -> str:
        return "\n".join(self.log().strip().splitlines()[-lines:])

    def wait_for(self, found: Callable[[], str | None], timeout: float, what: str) -> str:
        """Poll `found` until it gives a value; on failure the process is stopped, then we raise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = found()
            if value is not None:
                return value
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited ({self.process.returncode}) before {what}: {self.tail()}"
                )
            time.sleep(0.05)
        self.stop(timeout=5)  # e.g. a start-up that failed but left the process hanging
        raise RuntimeError(f"{self.name}: no {what} after {timeout:.0f} s: {self.tail()}")

    def listening_port(self, timeout: float) -> int:
        """The TCP port this process (or a child) listens on: for servers started on port 0."""

        def port() -> str | None:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(self.process.pid)
                for proc in [root, *root.children(recursive=True)]:
                    for conn in proc.net_connections("tcp"):
                        if conn.status == psutil.CONN_LISTEN:
                            return str(conn.laddr.port)
            return None

        return int(self.wait_for(port, timeout, "listening socket"))

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is not None:
            return
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            children = []
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        for child in children:  # the ones this process started, by pid
            with contextlib.suppress(psutil.Error):
                child.kill()


@dataclass
class Certs:
    ca_file: Path
    cert_file: Path  # 127.0.0.1's certificate chain, for the upstream and LiteLLM
    key_file: Path

    @classmethod
    def make(cls, workdir: Path) -> Certs:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        certs = cls(workdir / "upstream-ca.pem", workdir / "server-cert.pem", workdir / "server-key.pem")
        ca.cert_pem.write_to_path(str(certs.ca_file))
        cert.private_key_pem.write_to_path(str(certs.key_file))
        for i, blob in enumerate(cert.cert_chain_pems):
            blob.write_to_path(str(certs.cert_file), append=i > 0)
        return certs


def trusting(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def start_upstream(workdir: Path, certs: Certs) -> tuple[Service, int]:
    args = [sys.executable, str(ROOT / "bench" / "upstream.py")]
    args += ["--cert", str(certs.cert_file), "--key", str(certs.key_file)]
    service = Service.spawn("upstream", args, workdir, child_env())

    def ready() -> str | None:
        for line in service.log().splitlines():
            if line.startswith("upstream ready port="):
                return line.split("=", 1)[1]
        return None

    return service, int(service.wait_for(ready, 30, "ready line"))


def start_mitmdump(
    workdir: Path, certs: Certs, extra: list[str] | tuple[str, ...] = ()
) -> tuple[Service, str, Path]:
    """Bare mitmdump, quiet; `extra`: more of its options."""
    confdir = workdir / "mitmdump-conf"
    args = [
        str(BIN / "mitmdump"), "-q",
        "--listen-host", "127.0.0.1", "--listen-port", "0",
        "--set", f"confdir={confdir}",
        "--set", f"ssl_verify_upstream_trusted_ca={certs.ca_file}",
        "--set", "flow_detail=0",
        *extra,
    ]  # fmt: skip
    service = Service.spawn("mitmdump", args, workdir, child_env())
    port = service.listening_port(30)
    ca = confdir / "mitmproxy-ca-cert.pem"
    service.wait_for(lambda: "ok" if ca.exists() else None, 10, "CA certificate")
    return service, f"http://127.0.0.1:{port}", ca


def start_chatdebug(
    workdir: Path, certs: Certs, upstream_port: int, extra: list[str] | tuple[str, ...] = ()
) -> tuple[Service, str, Path, Path]:
    """`chatdebug run` on a fresh SQLite file; `extra`: more of its options."""
    database = workdir / "chatdebug.db"
    args = [
        str(BIN / "chatdebug"), "run",
        "--proxy-addr", "127.0.0.1:0",
        "--api-addr", "127.0.0.1:0",
        "--database", f"sqlite:///{database}",
        "--confdir", str(workdir / "chatdebug-conf"),
        "--intercept-host", f"127.0.0.1:{upstream_port}",
        "--upstream-ca", str(certs.ca_file),
        *extra,
    ]  # fmt: skip
    service = Service.spawn("chatdebug", args, workdir, child_env())

    def ready() -> str | None:
        for line in service.log().splitlines():
            if line.startswith("chatdebug ready "):
                return line
        return None

    line = service.wait_for(ready, 30, "ready line")
    parts = line.split(" · ")
    proxy = next(p for p in parts if p.startswith("proxy ")).split()[1]
    ca = next(p for p in parts if p.startswith("trust the CA: ")).removeprefix("trust the CA: ")
    return service, proxy, Path(ca), database


LITELLM_CONFIG = """\
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/gpt-4.1-2025-04-14
      api_base: https://127.0.0.1:{port}/v1
      api_key: {key}
litellm_settings:
  ssl_verify: {ca}
  telemetry: false
  set_verbose: false
general_settings:
  disable_spend_logs: true
  # no master key, as the other targets do no authentication; LiteLLM refuses that without this
  dangerously_permit_weak_or_unset_master_key: true
"""


def start_litellm(workdir: Path, certs: Certs, upstream_port: int) -> tuple[Service, str]:
    """LiteLLM's own gateway over HTTPS (same certificate as the upstream); no database, offline."""
    exe = BIN / "litellm"
    if not exe.exists():
        raise RuntimeError("not installed (pip install -e '.[bench]')")
    config = workdir / "litellm.yaml"
    config.write_text(LITELLM_CONFIG.format(model=MODEL, port=upstream_port, key=FAKE_KEY, ca=certs.ca_file))
    env = child_env(
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # no fetch of the price list at import
        LITELLM_TELEMETRY="False",
        LITELLM_TELEMETRY_DISABLED="True",
        DISABLE_SCHEMA_UPDATE="True",
        DISABLE_ADMIN_UI="True",
        LITELLM_LOG="ERROR",  # also turns uvicorn's access log off
        SSL_CERT_FILE=str(certs.ca_file),
        NO_DOCS="True",
    )
    env.pop("DATABASE_URL", None)
    env.pop("LITELLM_MASTER_KEY", None)
    args = [
        str(exe), "--config", str(config),
        "--host", "127.0.0.1", "--port", "0", "--num_workers", "1",
        "--ssl_certfile_path", str(certs.cert_file),
        "--ssl_keyfile_path", str(certs.key_file),
    ]  # fmt: skip
    service = Service.spawn("litellm", args, workdir, env)
    try:
        port = service.listening_port(120)
        base = f"https://127.0.0.1:{port}"

        def healthy() -> str | None:
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(f"{base}/health/liveliness", verify=trusting(certs.ca_file), timeout=2)
                return "ok" if r.status_code == 200 else None
            return None

        service.wait_for(healthy, 60, "healthy /health/liveliness")
    except Exception:
        service.stop()
        raise
    return service, base


# ---- sampling ----------------------------------------------------------------------------------


class TreeSampler:
    """Peak RSS (sum over the process and its children) every `interval`, in a thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def tree(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return [self.root]

    def sample(self) -> None:
        total = 0
        for proc in self.tree():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        self.peak = max(self.peak, total)

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self.tree():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> TreeSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sample()


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0))


@contextlib.contextmanager
def bystanders(result: Result, ours: list[TreeSampler]) -> Iterator[None]:
    """Cores used by processes other than this one and `ours` while the block runs: the noise."""

    def own() -> float:
        return time.process_time() + sum(tree.cpu_seconds() for tree in ours)

    busy, mine, started = busy_seconds(), own(), time.perf_counter()
    yield
    others = (busy_seconds() - busy) - (own() - mine)
    result.bystanders = max(0.0, others / (time.perf_counter() - started))


@contextlib.contextmanager
def py_spy(pid: int | None, out: Path | None) -> Iterator[None]:
    """`py-spy record` of `pid` while the block runs; off without `out`.

    `--gil` keeps only samples of the thread holding the GIL: Python code on the CPU, not a loop
    waiting in epoll nor SQLite working with the GIL released. Collapsed stacks, one a line.
    """
    exe = shutil.which("py-spy") or str(BIN / "py-spy")
    if pid is None or out is None or not Path(exe).exists():
        yield
        return
    args = [exe, "record", "--pid", str(pid), "--rate", "200", "--format", "raw", "--gil"]
    args += ["--nonblocking", "--output", str(out)]
    spy = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()


# where a sample's time goes: the first of these found anywhere on its stack names it
COMPONENTS = (
    ("chatdebug recorder hooks", ("(addons/recorder.py", "(addons/capture.py")),
    ("chatdebug pipeline (parse, redact, classify, group, track)", ("(addons/",)),
    ("chatdebug storage (writer, sqlite, aiosqlite)", ("(storage/", "aiosqlite/")),
    ("chatdebug API and events", ("(proxy/api", "(proxy/events", "aiohttp/")),
    ("LiteLLM", ("litellm/",)),
    ("mitmproxy", ("mitmproxy/",)),
)


OWN_CODE = ("(addons/", "(storage/", "(proxy/", "litellm/")  # beyond mitmproxy and the stdlib


def component(frames: list[str]) -> str:
    for name, needles in COMPONENTS:
        if any(needle in frame for frame in frames for needle in needles):
            return name
    return "other (event loop, TLS, ...)"


def profile_summary(path: Path, top: int = 12) -> list[str]:
    """Samples by component, then the functions most often on top of the stack (self) and on it."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    parts: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        samples += n
        own[frames[-1]] += n
        parts[component(frames)] += n
        for frame in set(frames):
            anywhere[frame] += n
    if not samples:
        return ["(no samples)"]
    lines = [f"{samples} samples holding the GIL; by component:"]
    lines += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in parts.most_common()]
    lines.append("self time:")
    lines += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in own.most_common(top)]
    own_code = [(f, n) for f, n in anywhere.most_common() if any(m in f for m in OWN_CODE)]
    if own_code:
        lines.append("inclusive (on the stack), the proxy's own functions:")
        lines += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in own_code[: top * 2]]
    else:
        lines.append("inclusive (on the stack):")
        lines += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in anywhere.most_common(top * 2)]
    return lines


# ---- load ----------------------------------------------------------------------------------------


class Bodies:
    """Unique chat turns: each request is a new conversation, as from many users."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.count = itertools.count()

    def next(self, *, stream: bool) -> bytes:
        i = next(self.count)
        body: dict[str, object] = {
            "model": MODEL,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": f"[{self.tag}-{i}] Which city is the capital of France?"},
            ],
            "temperature": 0.2,
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        return orjson.dumps(body)


HEADERS = {"Authorization": f"Bearer {FAKE_KEY}", "Content-Type": "application/json"}


def client(ep: Endpoint, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        proxy=ep.proxy,
        verify=ep.verify,
        trust_env=False,
        timeout=httpx.Timeout(30.0),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


async def complete(http: httpx.AsyncClient, ep: Endpoint, bodies: Bodies) -> None:
    r = await http.post(ep.url, content=bodies.next(stream=False), headers=HEADERS)
    if r.status_code != 200:
        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:120]}")


def error_name(e: Exception) -> str:
    return str(e)[:80] if isinstance(e, RuntimeError) else type(e).__name__


async def sequential(ep: Endpoint, load: Load, bodies: Bodies, result: Result) -> None:
    async with client(ep, 1) as http:
        for _ in range(load.warmup):
            await complete(http, ep, bodies)
        deadline = time.perf_counter() + load.sequential_seconds
        for _ in range(load.sequential):
            if time.perf_counter() > deadline:
                break
            started = time.perf_counter()
            try:
                await complete(http, ep, bodies)
            except Exception as e:
                result.errors[f"sequential: {error_name(e)}"] += 1
                continue
            result.seq_ms.append((time.perf_counter() - started) * 1000)


async def concurrent(
    ep: Endpoint,
    load: Load,
    bodies: Bodies,
    result: Result,
    sampler: TreeSampler | None,
    at_start: Callable[[], None] = lambda: None,
) -> tuple[float, float, int]:
    """Throughput of `load.clients` keep-alive clients; returns (start, end, ok) in perf_counter time."""
    async with client(ep, load.clients) as http:
        # open every connection (TLS handshakes) before the clock starts
        await asyncio.gather(*(complete(http, ep, bodies) for _ in range(load.clients)))
        issued = ok = 0
        at_start()
        cpu_before = sampler.cpu_seconds() if sampler else 0.0
        start = last = time.perf_counter()
        deadline = start + load.concurrent_seconds

        async def worker() -> None:
            nonlocal issued, ok, last
            while issued < load.concurrent and time.perf_counter() < deadline:
                issued += 1
                try:
                    await complete(http, ep, bodies)
                    ok += 1
                except Exception as e:
                    result.errors[f"concurrent: {error_name(e)}"] += 1
                last = time.perf_counter()

        await asyncio.gather(*(worker() for _ in range(load.clients)))
        if sampler is not None and ok:
            result.cpu_ms_per_request = (sampler.cpu_seconds() - cpu_before) * 1000 / ok
        result.rps = ok / (last - start) if last > start else None
        return start, last, ok


async def streams(ep: Endpoint, load: Load, bodies: Bodies, result: Result) -> None:
    async with client(ep, 1) as http:
        deadline = time.perf_counter() + load.stream_seconds
        for i in range(load.stream_warmup + load.streams):
            if time.perf_counter() > deadline:
                break
            try:
                ttfb, total, events = await one_stream(http, ep, bodies)
            except Exception as e:
                result.errors[f"stream: {error_name(e)}"] += 1
                continue
            if i >= load.stream_warmup:
                result.ttfb_ms.append(ttfb)
                result.stream_ms.append(total)
                result.stream_events[events] += 1


async def one_stream(http: httpx.AsyncClient, ep: Endpoint, bodies: Bodies) -> tuple[float, float, int]:
    """(ms to the first complete SSE event, ms to the end of the body, events received)."""
    body = bodies.next(stream=True)
    started = time.perf_counter()
    first: float | None = None
    received = bytearray()
    async with http.stream("POST", ep.url, content=body, headers=HEADERS) as r:
        if r.status_code != 200:
            await r.aread()
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:120]}")
        async for chunk in r.aiter_raw():
            received += chunk
            if first is None and (b"\n\n" in received or b"\r\n\r\n" in received):
                first = time.perf_counter()
    ended = time.perf_counter()
    events = bytes(received).replace(b"\r\n", b"\n").count(b"\n\n")
    return ((first or ended) - started) * 1000, (ended - started) * 1000, events


def landed_attempts(database: Path) -> int:
    with contextlib.closing(sqlite3.connect(database, timeout=5)) as db:
        (count,) = db.execute("SELECT count(*) FROM attempts WHERE status != 'in_progress'").fetchone()
    return int(count)


def wait_landed(database: Path, expected: int, timeout: float = 30.0) -> tuple[int, float]:
    """Poll until `expected` attempts landed (or the count stops moving); (count, when it got there)."""
    deadline = time.perf_counter() + timeout
    count, when, still_since = landed_attempts(database), time.perf_counter(), time.perf_counter()
    while count < expected and time.perf_counter() < deadline:
        time.sleep(0.02)
        now, latest = time.perf_counter(), landed_attempts(database)
        if latest != count:
            count, when, still_since = latest, now, now
        elif now - still_since > 5:
            break
    return count, when


async def measure(ep: Endpoint, load: Load, profile_dir: Path | None, name: str, upstream_pid: int) -> Result:
    result = Result(name)
    bodies = Bodies()
    sampler = TreeSampler(ep.pid) if ep.pid is not None else None
    ours = [TreeSampler(upstream_pid), *([sampler] if sampler else [])]
    with sampler or contextlib.nullcontext(), bystanders(result, ours):
        await sequential(ep, load, bodies, result)
        before = 0  # attempts landed before the throughput phase
        if ep.database is not None:
            before, _ = await asyncio.to_thread(wait_landed, ep.database, load.warmup + load.sequential)
        at_start: list[int] = []  # ... and when its clock starts (its warm-up may still be landing)
        database = ep.database

        def count_at_start() -> None:
            if database is not None:
                at_start.append(landed_attempts(database))

        profile = profile_dir / f"{name}.collapsed.txt" if profile_dir else None
        with py_spy(ep.pid, profile):
            start, end, ok = await concurrent(ep, load, bodies, result, sampler, count_at_start)
        if database is not None:
            expected = before + load.clients + ok
            count, landed = await asyncio.to_thread(wait_landed, database, expected)
            attempts = count - at_start[0]
            elapsed = max(landed, end) - start
            result.ingest = Ingest(
                count - before - load.clients, ok, attempts / elapsed, max(0.0, landed - end)
            )
        await streams(ep, load, bodies, result)
    result.peak_rss = sampler.peak if sampler else None
    return result


# ---- targets ------------------------------------------------------------------------------------


def run_target(
    name: str, workdir: Path, certs: Certs, upstream: tuple[Service, int], load: Load, spy: Path | None
) -> Result:
    upstream_service, upstream_port = upstream
    url = f"https://127.0.0.1:{upstream_port}/v1/chat/completions"
    service: Service | None = None
    try:
        if name == "direct":
            ep = Endpoint(url, trusting(certs.ca_file))
        elif name == "mitmdump":
            service, proxy, ca = start_mitmdump(workdir, certs)
            ep = Endpoint(url, trusting(ca), proxy, service.process.pid)
        elif name == "chatdebug":
            service, proxy, ca, database = start_chatdebug(workdir, certs, upstream_port)
            ep = Endpoint(url, trusting(ca), proxy, service.process.pid, database)
        else:
            try:
                service, base = start_litellm(workdir, certs, upstream_port)
            except Exception as e:
                return Result(name, skipped=f"not run: {' '.join(str(e).split())[:300]}")
            ep = Endpoint(f"{base}/v1/chat/completions", trusting(certs.ca_file), None, service.process.pid)
        return asyncio.run(measure(ep, load, spy, name, upstream_service.process.pid))
    finally:
        if service is not None:
            service.stop()


# ---- output -------------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


Metric = tuple[str, Callable[[Result], float | None], Callable[[float], str]]


def ms(v: float) -> str:
    return f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms"


METRICS: list[Metric] = [
    ("seq p50", lambda r: percentile(r.seq_ms, 50), ms),
    ("seq p99", lambda r: percentile(r.seq_ms, 99), ms),
    ("req/s @32", lambda r: r.rps, lambda v: f"{v:,.0f}"),
    ("proxy CPU/req", lambda r: r.cpu_ms_per_request, ms),
    ("SSE TTFB p50", lambda r: percentile(r.ttfb_ms, 50), ms),
    ("SSE total p50", lambda r: percentile(r.stream_ms, 50), ms),
    ("peak RSS", lambda r: r.peak_rss / 2**20 if r.peak_rss else None, lambda v: f"{v:,.0f} MiB"),
    ("ingest", lambda r: r.ingest.rate if r.ingest else None, lambda v: f"{v:,.0f} att/s"),
]


def table(results: dict[str, Result]) -> str:
    header = ["target", *(m[0] for m in METRICS), "errors"]
    rows = [header, ["---"] * len(header)]
    for name, r in results.items():
        if r.skipped:
            rows.append([LABELS[name], r.skipped, *["—"] * (len(header) - 2)])
            continue
        cells = [LABELS[name]]
        for _, get, fmt in METRICS:
            v = get(r)
            cells.append("—" if v is None else fmt(v))
        cells.append(str(sum(r.errors.values())))
        rows.append(cells)
    for ref in ("mitmdump", "direct"):
        base = results.get(ref)
        if base is None or base.skipped:
            continue
        for name, r in results.items():
            if name == ref or r.skipped or (ref == "mitmdump" and name == "direct"):
                continue
            cells = [f"{LABELS[name]} ÷ {LABELS[ref]}"]
            for _, get, _fmt in METRICS:
                a, b = get(r), get(base)
                cells.append(f"{a / b:.2f}x" if a is not None and b else "—")
            cells.append("")
            rows.append(cells)
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


# (metric, bound, reference, label): chatdebug-proxy's value ÷ the reference's must stay on the
# right side of the bound. "<=" for costs (CPU, latency, memory), ">=" for throughput.
GOALS: list[tuple[str, str, float, str]] = [
    ("proxy CPU/req", "<=", 1.0, "mitmdump"),
    ("req/s @32", ">=", 1.0, "mitmdump"),
    ("seq p50", "<=", 1.05, "mitmdump"),
    ("peak RSS", "<=", 1.2, "mitmdump"),
    ("req/s @32", ">=", 5.0, "litellm"),
]


def goals(results: dict[str, Result]) -> list[str]:
    """Each goal of chatdebug-proxy with its measured ratio, then its stream delays over direct."""
    ours = results.get("chatdebug")
    if ours is None or ours.skipped:
        return []
    get = {name: fn for name, fn, _ in METRICS}
    rows = ["| chatdebug-proxy ÷ | metric | goal | measured | met |", "|---|---|--:|--:|---|"]
    for metric, op, bound, ref in GOALS:
        base = results.get(ref)
        a = get[metric](ours)
        b = get[metric](base) if base is not None and not base.skipped else None
        if a is None or not b:
            rows.append(f"| {LABELS[ref]} | {metric} | {op} {bound:.2f}x | — | not measured |")
            continue
        ratio = a / b
        met = ratio <= bound if op == "<=" else ratio >= bound
        verdict = "yes" if met else "NO"
        rows.append(f"| {LABELS[ref]} | {metric} | {op} {bound:.2f}x | {ratio:.2f}x | {verdict} |")
    direct = results.get("direct")
    if direct is not None and not direct.skipped:
        # bare mitmdump buffers whole responses, so streams are compared with no proxy at all
        ttfb = (percentile(ours.ttfb_ms, 50), percentile(direct.ttfb_ms, 50))
        total = (percentile(ours.stream_ms, 50), percentile(direct.stream_ms, 50))
        if None not in ttfb and None not in total:
            rows.append("")
            rows.append(
                f"- stream first event: +{ttfb[0] - ttfb[1]:.2f} ms over direct (p50); per event: "
                f"+{(total[0] - total[1]) / STREAM_EVENTS:.3f} ms ((total p50 - direct's) / {STREAM_EVENTS})."
            )
    return rows


def chatdebug_source() -> str:
    """Which checkout the `chatdebug` process imports (PYTHONPATH may point at another), and its commit."""
    where = subprocess.run(
        [sys.executable, "-c", "import os, proxy; print(os.path.dirname(os.path.dirname(proxy.__file__)))"],
        capture_output=True, text=True, env=child_env(), cwd=tempfile.gettempdir(),
    ).stdout.strip()  # fmt: skip
    if not where:
        return "source not found"
    commit = subprocess.run(
        ["git", "-C", where, "describe", "--always", "--dirty"], capture_output=True, text=True
    ).stdout.strip()
    return f"{where} at {commit}" if commit else where


def machine() -> list[str]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def version(package: str) -> str:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    memory = psutil.virtual_memory().total / 2**30
    return [
        f"- CPU: {cpu}, {os.cpu_count()} logical cores ({psutil.cpu_count(logical=False)} physical), "
        f"{memory:.0f} GiB RAM",
        f"- OS: {platform.platform()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
        f"- mitmproxy {version('mitmproxy')}, chatdebug-proxy {version('chatdebug-proxy')}"
        f" ({chatdebug_source()}), "
        f"LiteLLM {version('litellm')}, httpx {version('httpx')}, aiohttp {version('aiohttp')}",
    ]


def notes(results: dict[str, Result], load: Load) -> list[str]:
    out = [
        f"- sequential: {load.sequential} non-streamed requests after {load.warmup} warm-up, one "
        f"keep-alive connection; throughput: {load.clients} keep-alive clients, at most "
        f"{load.concurrent} requests or {load.concurrent_seconds:.0f} s; SSE: {load.streams} streams "
        f"of {STREAM_EVENTS} events 2 ms apart, one at a time.",
        "- client, upstream and proxy share the machine's cores; the direct row is bound by the "
        "load generator, not the upstream.",
    ]
    noisy = {n: r.bystanders for n, r in results.items() if r.bystanders is not None}
    if noisy:
        worst = max(noisy.values())
        out.append(
            "- cores used by other processes on the machine meanwhile: "
            + ", ".join(f"{LABELS[n]} {v:.2f}" for n, v in noisy.items())
            + (" (WARNING: a busy machine; run again when it is idle)" if worst > 0.15 else " (idle enough)")
            + "."
        )
    for name, r in results.items():
        if r.ingest:
            i = r.ingest
            out.append(
                f"- {LABELS[name]} ingest: {i.attempts} attempts landed for {i.sent} requests of the "
                f"throughput phase (+{load.clients} warm-up), the last {i.lag:.2f} s after the load ended."
            )
        odd = {n: c for n, c in r.stream_events.items() if n != STREAM_EVENTS}
        if odd:
            out.append(f"- {LABELS[name]}: streams with an unexpected event count: {odd}")
        for what, count in r.errors.items():
            out.append(f"- {LABELS[name]}: {count} x {what}")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description="Benchmark chatdebug-proxy against direct, mitmdump and LiteLLM.")
    p.add_argument(
        "--targets", default=",".join(TARGETS), help="comma-separated subset of " + ",".join(TARGETS)
    )
    p.add_argument("--quick", action="store_true", help="a tenth of the load, for a smoke test")
    p.add_argument(
        "--py-spy", type=Path, metavar="DIR", help="profile each proxy during the throughput phase"
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, databases)")
    args = p.parse_args()
    asked = {t.strip() for t in args.targets.split(",") if t.strip()}
    if asked - set(TARGETS):
        p.error(f"unknown targets: {', '.join(sorted(asked - set(TARGETS)))}")
    targets = [t for t in TARGETS if t in asked]
    load = Load()
    if args.quick:
        load = Load(warmup=5, sequential=30, concurrent=200, concurrent_seconds=5, streams=5, stream_warmup=1)
    if args.py_spy:
        args.py_spy.mkdir(parents=True, exist_ok=True)

    workdir = Path(tempfile.mkdtemp(prefix="chatdebug-bench-"))
    print("## Machine\n")
    print("\n".join(machine()), flush=True)
    results: dict[str, Result] = {}
    certs = Certs.make(workdir)
    upstream, port = start_upstream(workdir, certs)
    try:
        for name in targets:
            print(f"\n... {LABELS[name]}", file=sys.stderr, flush=True)
            try:
                results[name] = run_target(name, workdir, certs, (upstream, port), load, args.py_spy)
            except Exception as e:
                results[name] = Result(name, skipped=f"failed: {' '.join(str(e).split())[:300]}")
    finally:
        upstream.stop()
        if args.keep:
            print(f"\nwork directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print("\n## Results\n")
    print(table(results))
    print()
    print("\n".join(notes(results, load)))
    if lines := goals(results):
        print("\n### Goals\n")
        print("\n".join(lines))
    if args.py_spy:
        for name in targets:
            path = args.py_spy / f"{name}.collapsed.txt"
            if path.exists():
                print(f"\n### py-spy: {LABELS[name]} during the throughput phase\n\n```")
                print("\n".join(profile_summary(path)))
                print("```")
    return 0


if __name__ == "__main__":
    sys.exit(main())

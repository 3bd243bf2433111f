"""Chaos against a real sidecar: concurrent SDK load, faults on a schedule, then an audit.

`python bench/chaos.py --seconds 120` starts `chatdebug run` as a process (fixed loopback ports,
so clients keep one configuration across restarts), a fake TLS upstream, and several threads of
official-openai-SDK calls (streamed and not), while faults are injected one after another:
a locked database, a deleted database, a full spool disk, SIGTERM + restart, kill -9 + restart,
gzip and brotli bombs, slow and broken upstreams. Then it audits: every call the client saw
complete is recorded exactly once and completed (or explained by counted drops), no planted
secret is on disk, peak RSS, and no run is left in progress after the stale window.
Exit status 1 when an audit line fails.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import brotli
import httpx
import openai
import trustme

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import wire  # noqa: E402
from tests.conftest import ready_addrs  # noqa: E402
from tests.upstream import Close, Reply, Seen, Upstream  # noqa: E402

AUTH_SECRET = "sk-proj-CHAOSauthSECRET0123456789abcdefABCDEF"
QUERY_SECRET = "AIzaChaosQuerySecret0123456789abcdefgh"
MESSAGE_SECRET = "sk-proj-CHAOSmessageSECRET9876543210zyxwv"
SECRETS = (AUTH_SECRET, QUERY_SECRET, MESSAGE_SECRET)
USAGE = wire.openai_usage(12, 3)
GiB = 1 << 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def bomb(encoding: str) -> bytes:
    """A body that decodes to 1 GiB of JSON-ish bytes, a few MiB on the wire."""
    block = b" " * (1 << 20)
    if encoding == "gzip":
        z = zlib.compressobj(9, zlib.DEFLATED, 31)
        return b"".join(z.compress(block) for _ in range(GiB >> 20)) + z.flush()
    b = brotli.Compressor(quality=5)
    return b"".join(b.process(block) for _ in range(GiB >> 20)) + b.finish()


@dataclass
class Ledger:
    """What the clients saw, by marker; and what each fault did."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    completed: dict[str, tuple[str, str, float]] = field(default_factory=dict)  # marker -> (fault, kind, t)
    failed: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    fault_calls: dict[str, list[str]] = field(default_factory=dict)
    current: str = "none"
    kills: list[float] = field(default_factory=list)
    deletes: list[float] = field(default_factory=list)


class Chaos:
    def __init__(self, seconds: float, threads: int, workdir: Path) -> None:
        self.seconds, self.threads, self.workdir = seconds, threads, workdir
        self.ledger = Ledger()
        self.stop_load = threading.Event()
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        self.upstream_ca = workdir / "upstream-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.upstream_ca))
        self.upstream = Upstream(context).start()
        self.upstream.responder = self.respond
        self.proxy_port, self.api_port = free_port(), free_port()
        self.db = workdir / "chatdebug.db"
        self.spool: Path | None = None
        self.logs: list[Path] = []
        self.process: subprocess.Popen[bytes] | None = None
        self.peak_rss = 0
        self.metrics_before_restart: list[dict[str, float]] = []
        self.bombs = {"gzip": bomb("gzip"), "br": bomb("br")}
        self.mount: Path | None = None

    # ---- the upstream: what a prompt's mode asks for ------------------------------------------

    def respond(self, seen: Seen) -> Reply:
        body = seen.body.decode(errors="replace")
        stream = '"stream":true' in body.replace(" ", "")
        text = ["chaos ", "reply ", "ok"]
        if "mode=bomb-gzip" in body or "mode=bomb-br" in body:
            enc = "gzip" if "bomb-gzip" in body else "br"
            return Reply(
                200, {"Content-Type": "application/json", "Content-Encoding": enc}, [self.bombs[enc]]
            )
        if "mode=broken" in body:
            events = wire.openai_stream(text, usage=USAGE)
            return Reply(200, {"Content-Type": "text/event-stream; charset=utf-8"}, [*events[:2], Close()])
        if stream:
            events = wire.openai_stream(text, usage=USAGE)
            if "mode=slow" in body:
                slow: list[bytes | float] = []
                for e in events:
                    slow += [e, 0.4]
                return Reply(200, {"Content-Type": "text/event-stream; charset=utf-8"}, slow)  # type: ignore[arg-type]
            return Reply.events(events)
        reply = Reply.json(wire.openai_completion("chaos reply ok", usage=USAGE))
        if "mode=slow" in body:
            reply.chunks = [1.5, *reply.chunks]
        return reply

    # ---- the sidecar --------------------------------------------------------------------------

    def start(self) -> None:
        log = self.workdir / f"sidecar-{len(self.logs)}.log"
        self.logs.append(log)
        args = [
            str(Path(sys.executable).parent / "chatdebug"), "run",
            "--proxy-addr", f"127.0.0.1:{self.proxy_port}",
            "--api-addr", f"127.0.0.1:{self.api_port}",
            "--database", f"sqlite:///{self.db}",
            "--confdir", str(self.workdir / "conf"),
            "--intercept-host", f"127.0.0.1:{self.upstream.port}",
            "--upstream-ca", str(self.upstream_ca),
            "--retry-window", "2", "--stale-after", "5",
        ]  # fmt: skip
        if self.spool is not None:
            args += ["--spool-path", str(self.spool)]
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("CHATDEBUG_") and "PROXY" not in k.upper()
        }
        with log.open("wb") as out:
            self.process = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("chatdebug ready "):
                    self.addrs = ready_addrs(line)
                    bundle = self.workdir / "bundle.pem"
                    bundle.write_bytes(Path(self.addrs["ca"]).read_bytes() + self.upstream_ca.read_bytes())
                    self.bundle = bundle
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"sidecar did not start:\n{log.read_text(errors='replace')[-3000:]}")

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        with contextlib.suppress(httpx.HTTPError):
            text = httpx.get(f"{self.addrs['api']}/metrics", timeout=5).text
            for line in text.splitlines():
                if line.startswith(("chatdebug_rows_dropped", "chatdebug_flows_not_recorded")):
                    name, _, value = line.rpartition(" ")
                    out[name] = out.get(name, 0) + float(value)
        return out

    def api(self, path: str, **params: Any) -> Any:
        response = httpx.get(self.addrs["api"] + path, params=params, timeout=15)
        response.raise_for_status()
        return response.json()

    # ---- load ---------------------------------------------------------------------------------

    def client(self) -> openai.OpenAI:
        http = httpx.Client(proxy=f"http://127.0.0.1:{self.proxy_port}", verify=str(self.bundle), timeout=20)
        return openai.OpenAI(
            api_key=AUTH_SECRET,
            base_url=f"{self.upstream.url}/v1",
            default_query={"key": QUERY_SECRET},
            http_client=http,
            max_retries=0,
        )

    def load(self, n: int) -> None:
        client = self.client()
        rng = random.Random(n)
        for i in itertools.count():
            if self.stop_load.is_set() or i > 5000:
                return
            fault = self.ledger.current
            mode = "slow" if fault == "slow upstream" else "broken" if fault == "broken upstream" else "ok"
            marker = f"chaosmark{n}x{i}x{time.monotonic_ns()}"
            stream = rng.random() < 0.5
            prompt = f"{marker} mode={mode} my key is {MESSAGE_SECRET}"
            try:
                if stream:
                    chunks = client.chat.completions.create(
                        model="gpt-4.1", messages=[{"role": "user", "content": prompt}], stream=True,
                        stream_options={"include_usage": True},
                    )  # fmt: skip
                    text, finish = "", None
                    for chunk in chunks:
                        for choice in chunk.choices:
                            text += choice.delta.content or ""
                            finish = choice.finish_reason or finish
                    ok = text == "chaos reply ok" and finish == "stop"
                else:
                    done = client.chat.completions.create(
                        model="gpt-4.1", messages=[{"role": "user", "content": prompt}]
                    )
                    ok = done.choices[0].message.content == "chaos reply ok"
            except Exception:
                ok = False
            with self.ledger.lock:
                if ok:
                    self.ledger.completed[marker] = (fault, "stream" if stream else "json", time.time())
                    self.ledger.fault_calls.setdefault(fault, []).append(marker)
                else:
                    self.ledger.failed += 1
            if not ok:
                time.sleep(0.2)

    def sample(self) -> None:
        while not self.stop_load.is_set():
            if self.process is not None:
                self.peak_rss = max(self.peak_rss, rss(self.process.pid))
            time.sleep(0.1)

    # ---- faults -------------------------------------------------------------------------------

    def f_lock(self) -> None:
        con = sqlite3.connect(self.db, timeout=5, isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        time.sleep(3)
        con.execute("ROLLBACK")
        con.close()

    def f_delete(self) -> None:
        self.ledger.deletes.append(time.time())
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{self.db}{suffix}").unlink()
        time.sleep(3)

    def f_spool_full(self) -> None:
        if self.mount is None:
            return
        filler = self.mount / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as f:
            while True:
                f.write(b"\0" * 65536)
        try:
            self.f_lock()
        finally:
            filler.unlink()

    def f_sigterm(self) -> None:
        assert self.process is not None
        self.metrics_before_restart.append(self.metrics())
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)
        self.start()

    def f_kill(self) -> None:
        assert self.process is not None
        self.ledger.kills.append(time.time())
        self.process.kill()
        self.process.wait(10)
        self.start()

    def f_bomb(self, encoding: str) -> None:
        with httpx.Client(
            proxy=f"http://127.0.0.1:{self.proxy_port}", verify=str(self.bundle), timeout=60
        ) as c:
            body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": f"mode=bomb-{encoding}"}]}
            with c.stream("POST", f"{self.upstream.url}/v1/chat/completions", json=body) as r:
                for _ in r.iter_raw():
                    pass

    def f_wait(self) -> None:
        time.sleep(3)

    def run(self) -> int:
        if os.geteuid() == 0:
            self.mount = self.workdir / "spooldisk"
            self.mount.mkdir()
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(self.mount)], check=False
            )
            if done.returncode == 0:
                self.spool = self.mount / "chatdebug.spool"
            else:
                self.mount = None
        if self.mount is None:
            print("note: not root or no tmpfs: the full-spool fault is skipped")
        self.start()
        faults: list[tuple[str, Callable[[], None]]] = [
            ("database locked", self.f_lock),
            ("slow upstream", self.f_wait),
            ("SIGTERM + restart", self.f_sigterm),
            ("gzip bomb", lambda: self.f_bomb("gzip")),
            ("broken upstream", self.f_wait),
            ("spool disk full", self.f_spool_full),
            ("kill -9 + restart", self.f_kill),
            ("brotli bomb", lambda: self.f_bomb("br")),
            ("database deleted", self.f_delete),
        ]
        workers = [threading.Thread(target=self.load, args=(n,), daemon=True) for n in range(self.threads)]
        sampler = threading.Thread(target=self.sample, daemon=True)
        sampler.start()
        for w in workers:
            w.start()
        end = time.monotonic() + self.seconds
        errors: dict[str, str] = {}
        for name, fault in itertools.cycle(faults):
            if time.monotonic() > end:
                break
            self.ledger.current = "none"
            time.sleep(min(2.0, max(0.0, end - time.monotonic())))
            self.ledger.current = name
            try:
                fault()
                self.ledger.faults[name] = self.ledger.faults.get(name, 0) + 1
            except Exception as e:
                errors[name] = repr(e)[:120]
        self.ledger.current = "none"
        time.sleep(1)
        self.stop_load.set()
        for w in workers:
            w.join(40)
        return self.audit(errors)

    # ---- audit --------------------------------------------------------------------------------

    def audit(self, errors: dict[str, str]) -> int:
        time.sleep(8)  # past --stale-after 5 and --retry-window 2
        drops = self.metrics()
        for m in self.metrics_before_restart:
            for k, v in m.items():
                drops[k] = drops.get(k, 0) + v
        counted = int(sum(drops.values()))
        deleted_at = max(self.ledger.deletes, default=0.0)
        rows: list[tuple[str, int, int, int, int, str]] = []
        fails: list[str] = []
        missing_total = dup_total = 0
        for name in ["none", *self.ledger.faults]:
            markers = self.ledger.fault_calls.get(name, [])
            recorded = missing = wrong = 0
            for marker in markers:
                runs = self.api("/api/v1/runs", q=marker)["runs"]
                if len(runs) == 1 and runs[0]["status"] == "completed":
                    recorded += 1
                elif not runs:
                    # the file was deleted after this call was recorded: gone with it, by the user's hand
                    if self.ledger.completed[marker][2] < deleted_at:
                        recorded += 1
                    else:
                        missing += 1
                else:
                    wrong += 1
                    print(f"wrong: {marker} ({name}): {[(r['id'], r['status']) for r in runs]}")
            missing_total += missing
            dup_total += wrong
            rows.append((name, self.ledger.faults.get(name, 0), len(markers), recorded, missing, ""))
        unexplained = max(0, missing_total - counted)
        print(
            f"\n{len(self.ledger.completed)} calls completed, {self.ledger.failed} failed at the client; "
            f"drops counted: {counted} {drops}"
        )
        print(
            "\n| fault | injected | calls | recorded | lost | result |\n| --- | --: | --: | --: | --: | --- |"
        )
        for name, injected, calls, recorded, missing, _ in rows:
            result = (
                "pass" if missing == 0 else ("explained by drops" if missing <= counted else "**FAIL: lost**")
            )
            note = f" ({errors[name]})" if name in errors else ""
            print(
                f"| {name} | {injected} | {calls} | {recorded} | {missing if missing else '-'} | {result}{note} |"  # noqa: E501
            )
        if unexplained:
            fails.append(f"{unexplained} completed calls neither recorded nor counted as dropped")
        if dup_total:
            fails.append(f"{dup_total} calls recorded more than once or not completed")
        files = [self.db, Path(f"{self.db}-wal"), *self.logs]
        if self.spool is not None:
            files.append(self.spool)
        leaked = [
            f"{p.name}:{s[:12]}" for p in files if p.exists() for s in SECRETS if s.encode() in p.read_bytes()
        ]
        print(
            f"| secrets on disk | {len(SECRETS)} planted | - | - | - | {'**FAIL** ' + ','.join(leaked) if leaked else 'pass'} |"  # noqa: E501
        )
        stale = self.api("/api/v1/runs", status="in_progress")["runs"]
        print(
            f"| runs in_progress after stale window | - | - | {len(stale)} | - | {'**FAIL**' if stale else 'pass'} |"  # noqa: E501
        )
        print(f"| peak RSS | - | - | - | - | {self.peak_rss / (1 << 20):.0f} MiB |")
        tracebacks = sum(p.read_text(errors="replace").count("Traceback") for p in self.logs)
        print(
            f"| tracebacks in sidecar logs | - | - | {tracebacks} | - | {'**FAIL**' if tracebacks else 'pass'} |"  # noqa: E501
        )
        if leaked:
            fails.append(f"secrets on disk: {leaked}")
        if stale:
            fails.append(f"{len(stale)} runs still in_progress")
        if tracebacks:
            fails.append(f"{tracebacks} tracebacks in the sidecar logs")
        for f in fails:
            print("FAIL:", f)
        return 1 if fails else 0

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.upstream.stop()
        if self.mount is not None:
            subprocess.run(["umount", "-l", str(self.mount)], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    a = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="chaos-"))
    chaos = Chaos(a.seconds, a.threads, workdir)
    try:
        return chaos.run()
    finally:
        chaos.close()
        print(f"work directory: {workdir}" if a.keep else "")
        if not a.keep:
            subprocess.run(["rm", "-rf", str(workdir)], check=False)


if __name__ == "__main__":
    sys.exit(main())

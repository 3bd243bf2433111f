"""Chaos against a real sidecar: concurrent SDK load, faults on a schedule, then an audit.

`python bench/chaos.py --seconds 120` starts `chatdebug run` as a process (fixed loopback ports,
so clients keep one configuration across restarts), a fake TLS upstream, and several threads of
official-openai-SDK calls (streamed and not), while faults are injected one after another:
a locked database, a deleted database, a full spool disk, SIGTERM + restart, kill -9 + restart,
gzip and brotli bombs, slow and broken upstreams. Then it audits: every call the client saw
complete is recorded exactly once and completed, no planted secret is on disk, peak RSS, and no
run is left in progress after the stale window. A call that is missing or recorded unfinished
passes only when the sidecar says why: a drop its /metrics counted within seconds of the call's
end, the database file deleted after it, or a kill -9 moments after it (what was still in
memory went with the process). Exit status 1 when an audit line fails.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import random
import re
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
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
MARKER = re.compile(r"chaosmark\d+x\d+x\d+")
# How close to a call's end (seconds before, after) a counted drop must be to explain its loss:
# its last rows reach the writer just before the client has read the end, and the sidecar's
# counter is sampled a few times a second.
DROP_WINDOW = (2.0, 10.0)
DELETE_WINDOW = 2.0  # a call that ended this long before a delete may be only in the deleted file
KILL_WINDOW = 2.0  # a call that ended this long before a kill -9 may still be only in memory
STALE_WINDOW = 15.0  # a run left in progress: its dropped snapshot came this soon after its last


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


def bomb(encoding: str, size: int = GiB) -> bytes:
    """A body that decodes to `size` bytes (1 GiB) of JSON-ish bytes, a few MiB on the wire."""
    block = b" " * (1 << 20)
    if encoding == "gzip":
        z = zlib.compressobj(9, zlib.DEFLATED, 31)
        return b"".join(z.compress(block) for _ in range(size >> 20)) + z.flush()
    b = brotli.Compressor(quality=5)
    return b"".join(b.process(block) for _ in range(size >> 20)) + b.finish()


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@dataclass
class Evidence:
    """What the sidecar and the faults say happened, by wall-clock time."""

    drops: list[float] = field(default_factory=list)  # when a drop counter was seen to rise
    kills: list[float] = field(default_factory=list)
    deletes: list[float] = field(default_factory=list)

    def dropped_near(self, t: float, after: float = DROP_WINDOW[1]) -> bool:
        return any(t - DROP_WINDOW[0] <= d <= t + after for d in self.drops)


def verdict(runs: list[dict[str, Any]], done_at: float, seen: Evidence) -> str:
    """How a call the client saw complete at `done_at` stands, given its runs (those only in a
    copy taken before a delete say `deleted`): `recorded`; explained (`deleted`, `dropped`,
    `killed`); or a failure (`twice`, `missing`, `unfinished`). A run recorded unfinished is as
    explained as a missing one when its last records were dropped: the earlier snapshot that did
    land is what the database holds."""
    if len(runs) > 1:
        return "twice"
    if runs and runs[0]["status"] == "completed":
        return "recorded"
    if all(r.get("deleted") for r in runs) and any(d - DELETE_WINDOW <= done_at <= d for d in seen.deletes):
        return "deleted"  # its end landed after the copy was taken: gone with the file
    if seen.dropped_near(done_at):
        return "dropped"
    if any(k - KILL_WINDOW <= done_at <= k for k in seen.kills):
        return "killed"
    return "unfinished" if runs else "missing"


EXPLAINED = {
    "deleted": "gone with the deleted file",
    "killed": "in memory at kill -9",
    "dropped": "counted drops",
}
FAILED = {"twice": "recorded twice", "missing": "lost unexplained", "unfinished": "unfinished unexplained"}


def table_row(*cells: object) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


@dataclass
class Report:
    """The audit: a table row per fault, the checks after it, and what failed."""

    lines: list[str] = field(default_factory=list)
    fails: list[str] = field(default_factory=list)
    verdicts: dict[str, dict[str, int]] = field(default_factory=dict)  # fault -> verdict -> calls
    injected: dict[str, int] = field(default_factory=dict)
    completed: int = 0
    counted: int = 0

    def __str__(self) -> str:
        return "\n".join(self.lines)


@dataclass
class Ledger:
    """What the clients saw, by marker; and what each fault did."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    completed: dict[str, tuple[str, str, float]] = field(default_factory=dict)  # marker -> (fault, kind, t)
    failed: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    fault_calls: dict[str, list[str]] = field(default_factory=dict)
    current: str = "none"
    seen: Evidence = field(default_factory=Evidence)
    counted: dict[int, float] = field(default_factory=dict)  # sidecar pid -> drops it counted


class Chaos:
    def __init__(
        self,
        seconds: float,
        threads: int,
        workdir: Path,
        *,
        hold: float = 3.0,
        gap: float = 2.0,
        cycles: int | None = None,
        bomb_bytes: int = GiB,
        spool_disk: str = "64m",
    ) -> None:
        """`hold`: how long a fault lasts; `gap`: calm between faults; `cycles`: that many rounds
        of every fault, whatever `seconds` says; `spool_disk`: the tmpfs under the spool (root
        only), large enough for what a locked database spools, filled only by its own fault."""
        self.seconds, self.threads, self.workdir = seconds, threads, workdir
        self.hold, self.gap, self.cycles, self.spool_disk = hold, gap, cycles, spool_disk
        self.ledger = Ledger()
        self.stop_load = threading.Event()
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("127.0.0.1", "localhost")

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
        self.bombs = {"gzip": bomb("gzip", bomb_bytes), "br": bomb("br", bomb_bytes)}
        self.mount: Path | None = None
        self.deleted_copies: list[Path] = []

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
            text = httpx.get(f"{self.addrs['api']}/metrics", timeout=2).text
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
        http = httpx.Client(
            proxy=f"http://127.0.0.1:{self.proxy_port}",
            verify=ssl.create_default_context(cafile=self.bundle),
            timeout=20,
        )
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
        """Peak RSS, and when the sidecar's drop counters rise (each process counts from zero)."""
        next_metrics = 0.0
        while not self.stop_load.is_set():
            process = self.process
            if process is not None:
                self.peak_rss = max(self.peak_rss, rss(process.pid))
                if time.monotonic() >= next_metrics:
                    next_metrics = time.monotonic() + 0.25
                    self.count_drops(process.pid)
            time.sleep(0.1)

    def count_drops(self, pid: int) -> None:
        with contextlib.suppress(AttributeError):  # not started yet
            counts = self.metrics()
            if not counts or self.process is None or self.process.pid != pid:
                return  # restarted meanwhile: these may be the next process's counts
            total = sum(counts.values())
            with self.ledger.lock:
                if total > self.ledger.counted.get(pid, 0):
                    self.ledger.counted[pid] = total
                    self.ledger.seen.drops.append(time.time())

    # ---- faults -------------------------------------------------------------------------------

    def f_lock(self) -> None:
        con = sqlite3.connect(self.db, timeout=5, isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        time.sleep(self.hold)
        con.execute("ROLLBACK")
        con.close()

    def f_delete(self) -> None:
        """The file goes, by the user's hand; a copy taken just before keeps the evidence."""
        copy = self.workdir / f"deleted-{len(self.ledger.seen.deletes)}.db"
        source = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)  # never creates it
        with contextlib.closing(source), contextlib.closing(sqlite3.connect(copy)) as target:
            source.backup(target)
        self.deleted_copies.append(copy)
        self.ledger.seen.deletes.append(time.time())
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{self.db}{suffix}").unlink()
        time.sleep(self.hold)

    def f_spool_full(self) -> None:
        assert self.mount is not None
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
        self.count_drops(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)
        self.start()

    def f_kill(self) -> None:
        assert self.process is not None
        self.count_drops(self.process.pid)
        self.ledger.seen.kills.append(time.time())
        self.process.kill()
        self.process.wait(10)
        self.start()

    def f_bomb(self, encoding: str) -> None:
        with httpx.Client(
            proxy=f"http://127.0.0.1:{self.proxy_port}",
            verify=ssl.create_default_context(cafile=self.bundle),
            timeout=60,
        ) as c:
            body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": f"mode=bomb-{encoding}"}]}
            with c.stream("POST", f"{self.upstream.url}/v1/chat/completions", json=body) as r:
                for _ in r.iter_raw():
                    pass

    def f_wait(self) -> None:
        time.sleep(self.hold)

    def faults(self) -> list[tuple[str, Callable[[], None]]]:
        """The faults, in the order they come (a full spool disk needs the tmpfs)."""
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
        return [(name, f) for name, f in faults if self.mount is not None or name != "spool disk full"]

    def run(self) -> Report:
        if os.geteuid() == 0:
            self.mount = self.workdir / "spooldisk"
            self.mount.mkdir()
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={self.spool_disk}", "tmpfs", str(self.mount)],
                check=False,
            )
            if done.returncode == 0:
                self.spool = self.mount / "chatdebug.spool"
            else:
                self.mount = None
        if self.mount is None:
            print("note: not root or no tmpfs: the full-spool fault is skipped")
        self.start()
        faults = self.faults()
        workers = [threading.Thread(target=self.load, args=(n,), daemon=True) for n in range(self.threads)]
        sampler = threading.Thread(target=self.sample, daemon=True)
        sampler.start()
        for w in workers:
            w.start()
        end = time.monotonic() + self.seconds
        errors: dict[str, str] = {}
        rounds = itertools.repeat(faults, self.cycles) if self.cycles else itertools.repeat(faults)
        for name, fault in itertools.chain.from_iterable(rounds):
            if self.cycles is None and time.monotonic() > end:
                break
            self.ledger.current = "none"
            time.sleep(self.gap)
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

    def audit(self, errors: dict[str, str]) -> Report:
        time.sleep(8)  # past --stale-after 5 and --retry-window 2
        assert self.process is not None
        self.count_drops(self.process.pid)
        report = Report(injected=dict(self.ledger.faults), completed=len(self.ledger.completed))
        seen, out = self.ledger.seen, report.lines.append
        report.counted = counted = int(sum(self.ledger.counted.values()))
        by_marker: dict[str, list[dict[str, Any]]] = {}
        for run in self.all_runs():
            if found := MARKER.search(run.get("first_message") or ""):
                by_marker.setdefault(found.group(), []).append(run)
        for copy in reversed(self.deleted_copies):  # what a deleted file held, unless a newer one has it
            with contextlib.closing(sqlite3.connect(copy)) as con:
                con.row_factory = sqlite3.Row
                for row in con.execute("SELECT id, status, first_message FROM runs"):
                    found = MARKER.search(row["first_message"] or "")
                    runs = by_marker.setdefault(found.group(), []) if found else []
                    if found and all(r["id"] != row["id"] for r in runs):
                        runs.append({**dict(row), "deleted": True})
        out(
            f"{report.completed} calls completed, {self.ledger.failed} failed at the client; "
            f"drops counted: {counted} (rows and flows, at {len(seen.drops)} samples)"
        )
        table = [
            "",
            "| fault | injected | calls | recorded | lost | result |",
            "| --- | --: | --: | --: | --: | --- |",
        ]
        for name in ["none", *self.ledger.faults]:
            tally = dict.fromkeys([*EXPLAINED, *FAILED, "recorded"], 0)
            for marker in self.ledger.fault_calls.get(name, []):
                runs = by_marker.get(marker, [])
                tally[v := verdict(runs, self.ledger.completed[marker][2], seen)] += 1
                if v in FAILED:
                    out(f"wrong: {marker} ({name}, {v}): {[(r['id'], r['status']) for r in runs]}")
            report.verdicts[name] = tally
            calls = sum(tally.values())
            lost = calls - tally["recorded"] - tally["deleted"]
            notes = [f"{tally[k]} {why}" for k, why in EXPLAINED.items() if tally[k]]
            notes += [f"**FAIL: {tally[k]} {why}**" for k, why in FAILED.items() if tally[k]]
            if any(tally[k] for k in FAILED):
                report.fails.append(
                    f"{name}: " + ", ".join(f"{tally[k]} {why}" for k, why in FAILED.items() if tally[k])
                )
            result = "pass" if not notes else "; ".join(notes)
            note = f" ({errors[name]})" if name in errors else ""
            table.append(
                table_row(name, report.injected.get(name, 0), calls, calls - lost, lost or "-", result + note)
            )
        report.lines += table
        explained_by_drops = sum(t["dropped"] for t in report.verdicts.values())
        if explained_by_drops > counted:  # each such call lost at least one counted row
            report.fails.append(f"{explained_by_drops} calls put down to drops, only {counted} counted")
        files = [self.db, Path(f"{self.db}-wal"), *self.logs]
        if self.spool is not None:
            files.append(self.spool)
        leaked = [
            f"{p.name}:{s[:12]}" for p in files if p.exists() for s in SECRETS if s.encode() in p.read_bytes()
        ]
        out(
            table_row(
                "secrets on disk",
                f"{len(SECRETS)} planted",
                "-",
                "-",
                "-",
                "**FAIL** " * bool(leaked) + (",".join(leaked) or "pass"),
            )
        )
        # A run whose last snapshot was dropped stays open until the database-side sweep, a minute
        # later: explained like a lost call, by a drop soon after its last recorded update.
        stale = self.api("/api/v1/runs", status="in_progress", limit=500)["runs"]
        unexplained = [r for r in stale if not seen.dropped_near(epoch(r["updated_at"]), STALE_WINDOW)]
        result = "pass" if not stale else f"{len(stale) - len(unexplained)} after counted drops"
        if unexplained:
            result = f"**FAIL: {len(unexplained)} unexplained** ({result})"
            report.fails.append(f"{len(unexplained)} runs still in_progress, no drop explains them")
        out(table_row("runs in_progress after stale window", "-", "-", len(stale), "-", result))
        out(table_row("peak RSS", "-", "-", "-", "-", f"{self.peak_rss / (1 << 20):.0f} MiB"))
        tracebacks = sum(p.read_text(errors="replace").count("Traceback") for p in self.logs)
        out(
            table_row(
                "tracebacks in sidecar logs", "-", "-", tracebacks, "-", "**FAIL**" if tracebacks else "pass"
            )
        )
        report.fails += [f"{name} could not be injected: {e}" for name, e in errors.items()]
        if leaked:
            report.fails.append(f"secrets on disk: {leaked}")
        if tracebacks:
            report.fails.append(f"{tracebacks} tracebacks in the sidecar logs")
        report.lines += [f"FAIL: {f}" for f in report.fails]
        return report

    def all_runs(self) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = self.api("/api/v1/runs", limit=500, **({"cursor": cursor} if cursor else {}))
            runs += page["runs"]
            if not (cursor := page.get("next_cursor")):
                return runs

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
        report = chaos.run()
        print(report)
        return 1 if report.fails else 0
    finally:
        chaos.close()
        print(f"work directory: {workdir}" if a.keep else "")
        if not a.keep:
            subprocess.run(["rm", "-rf", str(workdir)], check=False)


if __name__ == "__main__":
    sys.exit(main())

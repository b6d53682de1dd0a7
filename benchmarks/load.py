"""`python -m benchmarks.load`: many visitors at once against the web app, measured.

Starts the app (`python -m webapp`, the shipped model unless --model) on a free port, or uses
a running one (--url, with --pid for its memory), then:

  1. one visitor: a single gradio_client client asks for --chars characters (default 300),
     --alone-rounds times in turn (default 5; the median counts), after one unmeasured warm-up;
  2. load: --clients clients (default 32) ask at the same moment for --chars characters each:
     completed and failed requests, p50/p95 latency, aggregate characters/s, and the server's
     resident memory (RSS) before and after; then the crowd's aggregate characters/s over the
     one visitor's, measured against the same server in the same run;
  3. burst: --burst clients at once (default: as many as the queue holds, plus the requests
     generating, plus 32), each asking for --burst-chars: those beyond the queue must be turned
     away at once with Gradio's "Queue is full" answer, and afterwards one more request must
     complete normally (the server stayed healthy).

The clients share one TLS context (run_phase says why). Exits 1 when a request fails in any
other way, or the server does not answer after the burst.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from train.files import OutputExists, new_output_file, write_json
from train.table import format_table as table
from train.usage import fail
from webapp.inference.batching import CONCURRENCY, QUEUE_SIZE

REPO = Path(__file__).resolve().parents[1]
PROG = "python -m benchmarks.load"
PROMPT = "ROMEO:\n"
BUSY = "Queue is full"  # gradio_client's QueueError for Gradio's HTTP 503


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, last_words: Callable[[], str], timeout: float = 90) -> None:
    """Until `url` answers 200; RuntimeError when the time is up, or when the process exits
    first (with the end of what it said: `last_words()`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            said = last_words()[-2000:]
            raise RuntimeError(f"the app exited with {proc.returncode} before answering. {said}".strip())
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


@contextlib.contextmanager
def running_app(*args: str, env: dict | None = None):
    """`python -m webapp ARGS` on a free port of 127.0.0.1: yields (url, process, its log file),
    stops it after. Its output goes to a file: a pipe that nobody read filled up in a long run
    and stopped the server at its next log line."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="app-log-") as folder:
        log = Path(folder) / "server.log"
        with open(log, "w", encoding="utf-8") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "webapp", *args, "--port", str(port)],
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
            )
        url = f"http://127.0.0.1:{port}/"
        try:
            wait_until_up(url, proc, lambda: log.read_text(encoding="utf-8", errors="replace"))
            yield url, proc, log
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def with_children(pid: int) -> list[int]:
    """A process and its descendants (the server and its model process), from /proc (Linux)."""
    family = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            family += with_children(int(child))
    return family


def rss_mb(pid: int | None, key: str = "VmRSS") -> float | None:
    """A process's resident memory (VmRSS) or its peak (VmHWM) in MB, its descendants' added
    (the web server's model runs in a child process), from /proc (Linux)."""
    if pid is None:
        return None
    total, found = 0.0, False
    try:
        for member in with_children(pid):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total, found = total + int(line.split()[1]) / 1024, True
    except OSError:
        return None
    return total if found else None


@dataclass
class Phase:
    name: str
    clients: int
    chars: int
    completed: int = 0
    busy: int = 0  # turned away with the "Queue is full" answer
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    p50_s: float | None = None
    p95_s: float | None = None
    chars_per_s: float | None = None
    wall_s: float = 0.0
    rss_before_mb: float | None = None
    rss_after_mb: float | None = None


def percentile(values: list[float], q: float) -> float:
    """The q-quantile by linear interpolation between the sorted values."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def run_phase(url: str, name: str, clients: int, chars: int, pid: int | None, rounds: int = 1) -> Phase:
    """`clients` requests released at the same moment, one gradio_client Client each; `rounds`
    times in turn. Aggregate characters/s: the characters of completed requests over the wall time.

    The clients share one TLS context. gradio_client builds a new one for each request's two
    connections (httpx's default, certificate bundle loaded, even for http:// URLs), which costs
    CPU on the cores the server runs on: real visitors pay that on their own machines; here it
    would be counted against the server."""
    from gradio_client import Client

    phase = Phase(name, clients, chars, rss_before_mb=rss_mb(pid))
    walls = []
    tls = ssl.create_default_context()  # httpx takes a context for `verify`, which gradio_client passes on
    with ThreadPoolExecutor(clients) as pool:
        connected = list(pool.map(lambda _: Client(url, verbose=False, ssl_verify=tls), range(clients)))
    start_line = threading.Barrier(clients + 1)
    latencies, lock = [], threading.Lock()

    def visit(index: int):
        start_line.wait()
        t0 = time.perf_counter()
        try:
            text = connected[index].predict(PROMPT, chars, 0.8, 0, 1.0, index, api_name="/generate")[0]
        except Exception as e:  # what each visitor would see
            with lock:
                if BUSY in str(e):
                    phase.busy += 1
                else:
                    phase.failed += 1
                    phase.errors.append(f"{type(e).__name__}: {str(e)[:200]}")
            return
        with lock:
            if text.startswith(PROMPT) and len(text) == len(PROMPT) + chars:
                phase.completed += 1
                latencies.append(time.perf_counter() - t0)
            else:
                phase.failed += 1
                phase.errors.append(f"a wrong answer of {len(text)} characters")

    with ThreadPoolExecutor(clients) as pool:
        for _ in range(rounds):
            futures = [pool.submit(visit, i) for i in range(clients)]
            start_line.wait()
            t0 = time.perf_counter()
            for f in futures:
                f.result()
            walls.append(time.perf_counter() - t0)
    phase.wall_s = sum(walls)
    if latencies:
        phase.p50_s, phase.p95_s = percentile(latencies, 0.5), percentile(latencies, 0.95)
        # Per round: the characters of its completed requests over its wall time; the median round.
        phase.chars_per_s = len(latencies) / rounds * chars / statistics.median(walls)
    phase.rss_after_mb = rss_mb(pid)
    return phase


def phases_table(phases: list[Phase]) -> str:
    def number(x, spec):
        return "-" if x is None else format(x, spec)

    header = (
        "phase",
        "clients",
        "chars each",
        "completed",
        "busy",
        "failed",
        "p50 (s)",
        "p95 (s)",
        "chars/s",
        "RSS before → after (MB)",
    )
    lines = [header] + [
        (
            p.name,
            str(p.clients),
            str(p.chars),
            str(p.completed),
            str(p.busy),
            str(p.failed),
            number(p.p50_s, ".2f"),
            number(p.p95_s, ".2f"),
            number(p.chars_per_s, ",.0f"),
            f"{number(p.rss_before_mb, '.0f')} → {number(p.rss_after_mb, '.0f')}",
        )
        for p in phases
    ]
    return table(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="a running app (default: start one on a free port)")
    p.add_argument("--pid", type=int, help="the running app's process id, for its memory (with --url)")
    p.add_argument("--model", help="model for the app this command starts (default: the shipped one)")
    p.add_argument("--clients", type=int, default=32, help="clients at once in the load phase")
    p.add_argument(
        "--chars", type=int, default=300, help="characters each request of the one-visitor and load phases asks for"
    )
    p.add_argument(
        "--alone-rounds", type=int, default=5, help="requests of the one visitor, one after another (the median counts)"
    )
    p.add_argument(
        "--queue-size",
        type=int,
        default=QUEUE_SIZE,
        help="the app's queue size (passed to the app this command starts)",
    )
    p.add_argument("--concurrency", type=int, default=CONCURRENCY, help="the app's concurrent requests (likewise)")
    p.add_argument(
        "--burst", type=int, help="clients at once in the burst (default: queue size + concurrency + 32; 0 skips it)"
    )
    p.add_argument("--burst-chars", type=int, default=1000, help="characters each burst client asks for")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    return p


def app_under_test(args: argparse.Namespace):
    """(url, process or None, log or None): the running app at --url, or one this command starts."""
    if args.url:
        return contextlib.nullcontext((args.url.rstrip("/") + "/", None, None))
    model = ["--model", args.model] if args.model else []
    return running_app(*model, "--concurrency", str(args.concurrency), "--queue-size", str(args.queue_size))


def run_phases(url: str, pid: int | None, args: argparse.Namespace, burst: int) -> list[Phase]:
    """Warm-up, one visitor, the crowd, and (unless burst is 0) the burst and one visitor after it."""
    phases = [
        run_phase(url, "warm-up", 1, args.chars, pid),
        run_phase(url, "one visitor", 1, args.chars, pid, rounds=args.alone_rounds),
        run_phase(url, "load", args.clients, args.chars, pid),
    ]
    if burst:
        phases.append(run_phase(url, "burst", burst, args.burst_chars, pid))
        phases.append(run_phase(url, "after the burst", 1, args.chars, pid))
    return phases


def summary_lines(phases: list[Phase], chars: int, pid: int | None, peak: float | None) -> list[str]:
    """The crowd against the one visitor, the load phase's failures and memory, and the burst's outcome."""
    alone, load = phases[1], phases[2]
    lines = []
    if alone.chars_per_s and load.chars_per_s:
        lines.append(
            f"crowd / one visitor: {load.chars_per_s / alone.chars_per_s:.2f}x aggregate characters/s "
            f"({load.chars_per_s:,.0f} against {alone.chars_per_s:,.0f}), p95 {load.p95_s:.2f} s for {chars} "
            "characters"
        )
    growth = (load.rss_after_mb - alone.rss_after_mb) if pid else None
    lines.append(
        f"load: {load.clients} clients, {load.failed} failures, {load.busy} turned away, "
        f"server RSS growth {'-' if growth is None else f'{growth:+.0f} MB'} (peak "
        f"{'-' if peak is None else f'{peak:.0f} MB'})"
    )
    if len(phases) > 3:
        burst, after = phases[3], phases[4]
        lines.append(
            f"burst: {burst.completed} served, {burst.busy} turned away with '{BUSY}', {burst.failed} failures; "
            f"after it the server {'answered' if after.completed == 1 else 'did NOT answer'}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    burst = args.queue_size + args.concurrency + 32 if args.burst is None else args.burst
    sizes = (args.clients, args.chars, args.burst_chars, args.concurrency, args.alone_rounds)
    if min(sizes) < 1 or burst < 0 or args.queue_size < 0:
        sizes = "--clients, --chars, --alone-rounds, --burst-chars and --concurrency"
        return fail(PROG, f"{sizes} must be at least 1, --burst and --queue-size at least 0.")
    try:
        json_out = new_output_file(args.json, "--json") if args.json else None
        with app_under_test(args) as (url, proc, _):
            pid = proc.pid if proc is not None else args.pid
            phases = run_phases(url, pid, args, burst)
            peak = rss_mb(pid, "VmHWM")
    except (OutputExists, RuntimeError, OSError) as e:
        return fail(PROG, str(e))
    print(phases_table(phases))
    print("\n".join(summary_lines(phases, args.chars, pid, peak)))
    for p in phases:
        for error in p.errors[:5]:
            print(f"{p.name}: {error}", file=sys.stderr)
    if json_out:
        settings = {"url": url, "queue_size": args.queue_size, "concurrency": args.concurrency}
        write_json(json_out, {**settings, "rss_peak_mb": peak, "phases": [asdict(p) for p in phases]})
    healthy = all(p.failed == 0 for p in phases) and (not burst or phases[4].completed == 1)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())

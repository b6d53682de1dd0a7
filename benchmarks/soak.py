"""`python -m benchmarks.soak`: the web app under hours of mixed traffic, measured as it goes.

Starts the app (`python -m webapp`, the shipped model) on a free port with a temporary folder of
its own, runs --warmup-minutes of the traffic below, takes its figures, runs --minutes more, then
waits until the server is quiet and takes them again. The traffic, all at once:
- visitors (--visitors threads, one gradio_client each) asking for 20 to 400 characters with
  random settings, one request after another;
- a visitor who leaves mid-stream: reads a few events of a 2,000-character answer and hangs up;
- hostile settings (out of range, wrong types, NaN), each of which must get a refusal sentence;
- a client that joins the queue every 15 s and never reads its stream;
- an anonymous upload of 0.9 MB every 10 s, which must be refused;
- the model process killed (SIGKILL) once, half way: requests it was serving fail with its
  sentence, the next ones start a new one.
Every --sample-seconds: the server's and the model process's resident memory, the server's open
files and threads, and the bytes in its temporary folder. Prints the traffic table, the
resources table with the targets of docs/reliability.md, the memory slope over the second half,
and one visitor's answer time alone before and after. Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import ssl
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.load import PROMPT, percentile, running_app
from benchmarks.soak_traffic import (
    KILLED,
    Traffic,
    call_events,
    children,
    hostile,
    kill_model_process,
    leaver,
    pause,
    staller,
    uploader,
    visitor,
)
from train.files import OutputExists, new_output_file, write_json
from train.table import format_table as table
from train.usage import fail

PROG = "python -m benchmarks.soak"
UNREAD = "ended a stream nobody read"  # the server's log line (webapp/server/stalled.py)
MEMORY_SLACK_MB = 50  # the end may stand this far above where it stood after warm-up
QUIET_S = 12  # after quiet_down, how long the server may still take to let go of files and threads
WORKER_IDLE_S = 10.5  # anyio retires a worker thread idle for 10 s (when the next request comes)


@dataclass
class Sample:
    t: float
    server_mb: float
    model_mb: float
    open_files: int
    threads: int
    disk_bytes: int


def status_field(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0


def sample(pid: int, temp: Path, t0: float) -> Sample:
    model = sum(status_field(c, "VmRSS") for c in children(pid)) / 1024
    return Sample(
        round(time.monotonic() - t0, 1),
        status_field(pid, "VmRSS") / 1024,
        model,
        len(os.listdir(f"/proc/{pid}/fd")),
        status_field(pid, "Threads"),
        folder_bytes(temp),
    )


def run_traffic(
    url: str,
    pid: int,
    temp: Path,
    seconds: float,
    visitors: int,
    kill: bool,
    traffic: Traffic,
    samples: list[Sample],
    every_s: float,
    t0: float,
) -> None:
    config = json.loads(urllib.request.urlopen(url + "config", timeout=30).read())
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "generate")
    start = time.monotonic()
    deadline = start + seconds
    tls = ssl.create_default_context()  # shared, as benchmarks.load does (run_phase says why)
    threads = [threading.Thread(target=visitor, args=(url, traffic, deadline, i, tls)) for i in range(visitors)]
    threads += [
        threading.Thread(target=leaver, args=(url, traffic, deadline, 101)),
        threading.Thread(target=hostile, args=(url, traffic, deadline, 102)),
        threading.Thread(target=staller, args=(url, traffic, deadline, fn_index)),
        threading.Thread(target=uploader, args=(url, traffic, deadline)),
    ]
    if kill:
        threads.append(threading.Thread(target=kill_model_process, args=(pid, traffic, start + seconds / 2)))
    for t in threads:
        t.start()
    while time.monotonic() < deadline:
        samples.append(sample(pid, temp, t0))
        pause(every_s, deadline)
    for t in threads:
        t.join()


def quiet_sample(pid: int, temp: Path, t0: float, wait_s: float, quiet) -> Sample:
    """The first figures, sampled every half second for at most wait_s, for which quiet(sample)
    holds (stalled streams ended, idle worker threads gone, connections closed), else the last."""
    deadline = time.monotonic() + wait_s
    while not quiet(now := sample(pid, temp, t0)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return now


def quiet_down(url: str, stall_seconds: float) -> None:
    """Wait for the server to go quiet after traffic: stalled streams end after --stall-seconds,
    anyio's worker threads (Gradio runs requests on them) idle out after 10 s. Then one short
    request, since only a new request prunes idle workers: without it, the thread count depends
    on how many happened to be running when the traffic stopped."""
    time.sleep(max(stall_seconds, WORKER_IDLE_S))
    call_events(url, [PROMPT, 1, 0.8, 0, 1.0, 0, 0.0])


def alone(url: str, rounds: int = 3) -> float:
    """Seconds one visitor waits for 300 characters with nobody else there (the median of rounds)."""
    from gradio_client import Client

    client, times = Client(url, verbose=False), []
    for i in range(rounds):
        start = time.monotonic()
        client.predict(PROMPT, 300, 0.8, 0, 1.0, i, 0.0, api_name="/generate")
        times.append(time.monotonic() - start)
    return statistics.median(times)


def slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) points, in MB per minute."""
    if len(points) < 3:
        return None
    mean_t, mean_y = statistics.fmean(t for t, _ in points), statistics.fmean(y for _, y in points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    return 60 * sum((t - mean_t) * (y - mean_y) for t, y in points) / spread if spread else None


def traffic_table(traffic: Traffic, t0: float) -> tuple[str, dict]:
    """The table, and each kind's figures; a failure's note says when it ended (seconds since t0),
    to set beside the moment the model process was killed."""
    rows, figures = [], {}
    for kind in dict.fromkeys(o.kind for o in traffic.outcomes):
        mine = [o for o in traffic.outcomes if o.kind == kind]
        killed = [o for o in mine if not o.ok and KILLED in o.note]
        failed = [o for o in mine if not o.ok and o not in killed]
        seconds = [o.end - o.start for o in mine if o.ok]
        p50, p95 = (percentile(seconds, 0.5), percentile(seconds, 0.95)) if seconds else (None, None)
        figures[kind] = {
            "requests": len(mine),
            "as_expected": len(mine) - len(killed) - len(failed),
            "killed": len(killed),
            "failed": len(failed),
            "p50_s": p50,
            "p95_s": p95,
            "failures": [f"{o.note} (ended {o.end - t0:.0f} s in)" for o in failed][:20],
        }
        rows.append(
            [
                kind,
                str(len(mine)),
                str(len(mine) - len(killed) - len(failed)),
                str(len(killed)),
                str(len(failed)),
                "-" if p50 is None else f"{p50:.2f}",
                "-" if p95 is None else f"{p95:.2f}",
            ]
        )
    return table(
        [["traffic", "requests", "as expected", "served by the killed process", "failed", "p50 (s)", "p95 (s)"], *rows]
    ), figures


def resource_targets(warmup_threads: int) -> list[tuple[str, str, str, object, bool]]:
    """(name, Sample field, target, met(start, end), whether the end waits for it: the server
    lets go of threads, files and disk once quiet; memory is taken as it then stands). Threads
    are held to the most the warm-up's traffic needed: the pools that run requests (Gradio's,
    asyncio's) keep threads they have started, a plateau reached in the warm-up."""
    return [
        (
            "server memory (MB)",
            "server_mb",
            f"end <= start + {MEMORY_SLACK_MB}",
            lambda s, e: e <= s + MEMORY_SLACK_MB,
            False,
        ),
        (
            "model process memory (MB)",
            "model_mb",
            f"end <= start + {MEMORY_SLACK_MB}",
            lambda s, e: e <= s + MEMORY_SLACK_MB,
            False,
        ),
        ("server open files", "open_files", "end <= start", lambda s, e: e <= s, True),
        (
            "server threads",
            "threads",
            f"end <= warm-up's {warmup_threads}",
            lambda s, e: e <= max(s, warmup_threads),
            True,
        ),
        ("bytes in its temporary folder", "disk_bytes", "end <= start", lambda s, e: e <= s, True),
    ]


def settled(base: Sample, now: Sample, warmup_threads: int) -> bool:
    """Whether `now` meets every target the end waits for."""
    return all(
        met(getattr(base, key), getattr(now, key))
        for _, key, _, met, waits in resource_targets(warmup_threads)
        if waits
    )


def resources_table(base: Sample, during: list[Sample], end: Sample, warmup_threads: int) -> tuple[str, list[bool]]:
    rows, oks = [], []
    for name, key, target, ok, _ in resource_targets(warmup_threads):
        start, stop = getattr(base, key), getattr(end, key)
        peak = max([start, stop, *(getattr(s, key) for s in during)])
        oks.append(ok(start, stop))
        rows.append([name, f"{start:,.0f}", f"{peak:,.0f}", f"{stop:,.0f}", target, "yes" if oks[-1] else "NO"])
    return table([["resource", "after warm-up", "peak", "end (quiet)", "target", "met"], *rows]), oks


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30, help="minutes of measured traffic (default 30)")
    p.add_argument("--warmup-minutes", type=float, default=2, help="minutes of warm-up traffic first (default 2)")
    p.add_argument("--visitors", type=int, default=8, help="visitors asking at the same time (default 8)")
    p.add_argument("--sample-seconds", type=float, default=10, help="seconds between figures (default 10)")
    p.add_argument("--stall-seconds", type=float, default=20, help="the server's CHARGPT_STALL_SECONDS (default 20)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    return p


@dataclass
class Soak:
    """What one soak measured: the traffic's outcomes, the server's figures after the warm-up
    (`base`), while the measured traffic ran (`samples`) and once it was quiet again (`end`)."""

    t0: float = field(default_factory=time.monotonic)
    warm_traffic: Traffic = field(default_factory=Traffic)
    traffic: Traffic = field(default_factory=Traffic)
    samples: list[Sample] = field(default_factory=list)
    warmup_threads: int = 0
    base: Sample | None = None
    end: Sample | None = None
    alone_before_s: float = 0.0
    alone_after_s: float = 0.0
    log_lines: list[str] = field(default_factory=list)
    left_on_disk: int = 0

    @property
    def tracebacks(self) -> int:
        return sum(line.startswith("Traceback") for line in self.log_lines)

    @property
    def unread(self) -> int:
        """Streams the server ended unread: each should be a staller's (one more is a client that
        stopped reading an answer it had asked for, a failure on the client's side)."""
        return sum(UNREAD in line for line in self.log_lines)

    @property
    def stallers(self) -> int:
        return sum(o.kind == "joins, never reads" for o in [*self.warm_traffic.outcomes, *self.traffic.outcomes])

    def memory_slopes(self) -> dict[str, float | None]:
        """MB per minute over the second half of the measured traffic."""
        half = self.samples[len(self.samples) // 2 :]
        return {key: slope_per_minute([(s.t, getattr(s, key)) for s in half]) for key in ("server_mb", "model_mb")}


def soak(args: argparse.Namespace) -> Soak:
    """Start the app with a temporary folder of its own, warm it up, measure, and let it go quiet."""
    run = Soak()
    with tempfile.TemporaryDirectory(prefix="soak-") as folder:
        gradio_temp = Path(folder) / "gradio"
        env = dict(os.environ, GRADIO_TEMP_DIR=str(gradio_temp), CHARGPT_STALL_SECONDS=str(args.stall_seconds))
        with running_app(env=env) as (url, proc, log):
            traffic = functools.partial(
                run_traffic, url, proc.pid, gradio_temp, visitors=args.visitors, every_s=args.sample_seconds, t0=run.t0
            )
            run.alone_before_s = alone(url)
            warmup: list[Sample] = []
            traffic(args.warmup_minutes * 60, kill=False, traffic=run.warm_traffic, samples=warmup)
            quiet_down(url, args.stall_seconds)
            run.base = sample(proc.pid, gradio_temp, run.t0)
            run.warmup_threads = max([run.base.threads, *(w.threads for w in warmup)])
            traffic(args.minutes * 60, kill=True, traffic=run.traffic, samples=run.samples)
            quiet_down(url, args.stall_seconds)
            quiet = functools.partial(settled, run.base, warmup_threads=run.warmup_threads)
            run.end = quiet_sample(proc.pid, gradio_temp, run.t0, QUIET_S, quiet)
            run.alone_after_s = alone(url)
            run.log_lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        run.left_on_disk = folder_bytes(gradio_temp)
    return run


def report_lines(args: argparse.Namespace, run: Soak, traffic_text: str, resources_text: str) -> list[str]:
    killed_at = run.traffic.killed_at
    killed = f"the model process killed at {killed_at - run.t0:.0f} s" if killed_at else "no model process to kill"
    slope = run.memory_slopes()
    slopes = [("server", slope["server_mb"]), ("model process", slope["model_mb"])]
    return [
        f"{args.minutes:g} minutes of traffic after {args.warmup_minutes:g} of warm-up, {args.visitors} visitors "
        f"at once; {killed}",
        traffic_text,
        "",
        resources_text,
        "memory slope over the second half: "
        + ", ".join(f"{name} {'-' if v is None else f'{v:+.2f} MB/min'}" for name, v in slopes),
        f"one visitor alone, 300 characters: {run.alone_before_s:.2f} s before, {run.alone_after_s:.2f} s after",
        f"left in Gradio's temporary folder after the server stopped: {run.left_on_disk:,} bytes",
        f"the server's log: {len(run.log_lines):,} lines, {run.tracebacks} tracebacks",
        f"streams the server ended unread: {run.unread} (clients that joined and never read: {run.stallers})",
    ]


def figures_json(args: argparse.Namespace, run: Soak, by_kind: dict) -> dict:
    return {
        "minutes": args.minutes,
        "warmup_minutes": args.warmup_minutes,
        "visitors": args.visitors,
        "killed_at_s": run.traffic.killed_at and run.traffic.killed_at - run.t0,
        "traffic": by_kind,
        "after_warmup": asdict(run.base),
        "end": asdict(run.end),
        "samples": [asdict(s) for s in run.samples],
        "slope_mb_per_min": run.memory_slopes(),
        "alone_s": {"before": run.alone_before_s, "after": run.alone_after_s},
        "left_on_disk_bytes": run.left_on_disk,
        "log_lines": len(run.log_lines),
        "log_tracebacks": run.tracebacks,
        "ended_unread": run.unread,
        "never_read_joins": run.stallers,
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if min(args.minutes, args.sample_seconds, args.stall_seconds) <= 0 or args.warmup_minutes < 0 or args.visitors < 1:
        times = "--minutes, --sample-seconds and --stall-seconds"
        return fail(PROG, f"{times} must be above 0, --warmup-minutes at least 0 and --visitors at least 1.")
    try:
        json_out = new_output_file(args.json, "--json") if args.json else None
        run = soak(args)
    except (OutputExists, RuntimeError, OSError) as e:
        return fail(PROG, str(e))
    traffic_text, by_kind = traffic_table(run.traffic, run.t0)
    resources_text, oks = resources_table(run.base, run.samples, run.end, run.warmup_threads)
    print("\n".join(report_lines(args, run, traffic_text, resources_text)))
    for kind, figures in by_kind.items():
        for note in figures["failures"]:
            print(f"{kind}: {note}", file=sys.stderr)
    if json_out:
        write_json(json_out, figures_json(args, run, by_kind))
    unexpected = sum(f["failed"] for f in by_kind.values())
    return 0 if unexpected == 0 and all(oks) and run.left_on_disk == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

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
from dataclasses import asdict, dataclass
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
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30, help="minutes of measured traffic (default 30)")
    p.add_argument(
        "--warmup-minutes",
        type=float,
        default=2,
        help="minutes of the same traffic before the first figures (default 2)",
    )
    p.add_argument("--visitors", type=int, default=8, help="visitors asking at the same time (default 8)")
    p.add_argument("--sample-seconds", type=float, default=10, help="seconds between figures (default 10)")
    p.add_argument(
        "--stall-seconds",
        type=float,
        default=20,
        help="the server's CHARGPT_STALL_SECONDS (default 20, the server's own)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = "python -m benchmarks.soak"
    if min(args.minutes, args.sample_seconds, args.stall_seconds) <= 0 or args.warmup_minutes < 0 or args.visitors < 1:
        print(
            f"{prog}: error: --minutes, --sample-seconds and --stall-seconds must be above 0, --warmup-minutes at "
            "least 0 "
            "and --visitors at least 1.",
            file=sys.stderr,
        )
        return 2
    try:
        json_out = new_output_file(args.json, "--json") if args.json else None
    except OutputExists as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    traffic, samples, t0 = Traffic(), [], time.monotonic()
    with tempfile.TemporaryDirectory(prefix="soak-") as folder:
        gradio_temp = Path(folder) / "gradio"
        env = dict(os.environ, GRADIO_TEMP_DIR=str(gradio_temp), CHARGPT_STALL_SECONDS=str(args.stall_seconds))
        try:
            with running_app(env=env) as (url, proc, log):
                before = alone(url)
                warmup: list[Sample] = []
                warm_traffic = Traffic()
                run_traffic(
                    url,
                    proc.pid,
                    gradio_temp,
                    args.warmup_minutes * 60,
                    args.visitors,
                    False,
                    warm_traffic,
                    warmup,
                    args.sample_seconds,
                    t0,
                )
                quiet_down(url, args.stall_seconds)
                base = sample(proc.pid, gradio_temp, t0)
                warmup_threads = max([base.threads, *(w.threads for w in warmup)])
                run_traffic(
                    url,
                    proc.pid,
                    gradio_temp,
                    args.minutes * 60,
                    args.visitors,
                    True,
                    traffic,
                    samples,
                    args.sample_seconds,
                    t0,
                )
                quiet_down(url, args.stall_seconds)
                end = quiet_sample(proc.pid, gradio_temp, t0, QUIET_S, lambda now: settled(base, now, warmup_threads))
                after = alone(url)
                log_lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        except (RuntimeError, OSError) as e:
            print(f"{prog}: error: {e}", file=sys.stderr)
            return 2
        left_on_disk = folder_bytes(gradio_temp)
    traffic_text, by_kind = traffic_table(traffic, t0)
    resources_text, oks = resources_table(base, samples, end, warmup_threads)
    half = samples[len(samples) // 2 :]
    slopes = {key: slope_per_minute([(s.t, getattr(s, key)) for s in half]) for key in ("server_mb", "model_mb")}
    killed = (
        f"the model process killed at {traffic.killed_at - t0:.0f} s"
        if traffic.killed_at
        else "no model process to kill"
    )
    print(
        f"{args.minutes:g} minutes of traffic after {args.warmup_minutes:g} of warm-up, {args.visitors} visitors "
        f"at once; {killed}"
    )
    print(traffic_text)
    print()
    print(resources_text)
    print(
        "memory slope over the second half: "
        + ", ".join(
            f"{name} {'-' if v is None else f'{v:+.2f} MB/min'}"
            for name, v in (("server", slopes["server_mb"]), ("model process", slopes["model_mb"]))
        )
    )
    print(f"one visitor alone, 300 characters: {before:.2f} s before, {after:.2f} s after")
    print(f"left in Gradio's temporary folder after the server stopped: {left_on_disk:,} bytes")
    tracebacks = sum(line.startswith("Traceback") for line in log_lines)
    print(f"the server's log: {len(log_lines):,} lines, {tracebacks} tracebacks")
    # Every stream the server ended unread should be a staller's; one more is a client that stopped
    # reading an answer it had asked for (a failure on the client's side).
    unread = sum(UNREAD in line for line in log_lines)
    stallers = sum(o.kind == "joins, never reads" for o in [*warm_traffic.outcomes, *traffic.outcomes])
    print(f"streams the server ended unread: {unread} (clients that joined and never read: {stallers})")
    for kind, figures in by_kind.items():
        for note in figures["failures"]:
            print(f"{kind}: {note}", file=sys.stderr)
    unexpected = sum(f["failed"] for f in by_kind.values())
    if json_out:
        write_json(
            json_out,
            {
                "minutes": args.minutes,
                "warmup_minutes": args.warmup_minutes,
                "visitors": args.visitors,
                "killed_at_s": traffic.killed_at and traffic.killed_at - t0,
                "traffic": by_kind,
                "after_warmup": asdict(base),
                "end": asdict(end),
                "samples": [asdict(s) for s in samples],
                "slope_mb_per_min": slopes,
                "alone_s": {"before": before, "after": after},
                "left_on_disk_bytes": left_on_disk,
                "log_lines": len(log_lines),
                "log_tracebacks": tracebacks,
                "ended_unread": unread,
                "never_read_joins": stallers,
            },
        )
    return 0 if unexpected == 0 and all(oks) and left_on_disk == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""The soak's traffic (benchmarks/soak.py): each kind of client as a function that runs until the
deadline and records what it saw in a Traffic, and the model process killed once."""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.load import PROMPT

KILLED = "The model process stopped"  # the sentence of a request the killed model process was serving
HOSTILE = [
    (10**9, 0.8, 0, 1.0, 1, 0.0),
    (10, -1, 0, 1.0, 1, 0.0),
    (10, 0.8, 0, 0, 1, 0.0),
    (10, 0.8, -5, 1.0, 1, 0.0),
    ("ten", 0.8, 0, 1.0, 1, 0.0),
    (10, 0.8, 0, 1.0, 1.5, 0.0),
    (10, 0.8, 0, 1.0, 1, 1.5),
    (10, "NaN", 0, 1.0, 1, 0.0),
    (10, 0.8, 0, 1.0, 1, "some"),
    ([], {}, None, None, None, None),
]
UPLOAD = (
    b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.bin"\r\n\r\n' + b"x" * 900_000 + b"\r\n--b--\r\n"
)


@dataclass
class Outcome:
    kind: str
    start: float
    end: float
    ok: bool
    note: str = ""


@dataclass
class Traffic:
    """What every kind of client saw, appended to by their threads."""

    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    killed_at: float | None = None

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)


def children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").glob("*") for c in (task / "children").read_text().split()]


def pause(seconds: float, deadline: float) -> None:
    """Sleep `seconds`, but not past the traffic's deadline (a client then stops at once)."""
    time.sleep(max(0.0, min(seconds, deadline - time.monotonic())))


def post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, bytes]:
    request = urllib.request.Request(url, body, {"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError as e:  # no answer at all: the client records it as a failure
        return 0, f"{type(e).__name__}: {e}".encode()


def call_events(url: str, data: list) -> list[tuple[str, str]]:
    """/generate over the plain HTTP API: its (event, data) lines, or [("http NNN", body)]."""
    status, body = post(url + "gradio_api/call/generate", json.dumps({"data": data}).encode())
    if status != 200:
        return [(f"http {status}", body.decode("utf-8", "replace"))]
    try:
        with urllib.request.urlopen(f"{url}gradio_api/call/generate/{json.loads(body)['event_id']}", timeout=120) as r:
            lines = r.read().decode("utf-8", "replace").splitlines()
    except OSError as e:
        return [("no answer", f"{type(e).__name__}: {e}")]
    return list(
        zip([x[7:] for x in lines if x.startswith("event: ")], [x[6:] for x in lines if x.startswith("data: ")])
    )


def visitor(url: str, traffic: Traffic, deadline: float, seed: int, tls) -> None:
    from gradio_client import Client

    rng, client = random.Random(seed), Client(url, verbose=False, ssl_verify=tls)
    while time.monotonic() < deadline:
        chars = rng.randint(20, 400)
        settings = (
            chars,
            round(rng.uniform(0, 1.5), 2),
            rng.choice([0, 5, 20, 65]),
            round(rng.uniform(0.5, 1), 2),
            rng.randint(0, 2**31),
            rng.choice([0.0, 0.05, 0.2]),
        )
        start = time.monotonic()
        try:
            text = client.predict(PROMPT, *settings, api_name="/generate")[0]
            ok, note = len(text) == len(PROMPT) + chars, f"{len(text)} characters"
        except Exception as e:  # what the visitor would see
            ok, note = False, f"{type(e).__name__}: {str(e)[:200]}"
        traffic.add(Outcome("visitor", start, time.monotonic(), ok, note))


def leaver(url: str, traffic: Traffic, deadline: float, seed: int) -> None:
    rng = random.Random(seed)
    host, port = url.split("//")[1].strip("/").split(":")
    while time.monotonic() < deadline:
        start = time.monotonic()
        status, body = post(
            url + "gradio_api/call/generate", json.dumps({"data": [PROMPT, 2000, 0.8, 0, 1.0, 1, 0.0]}).encode()
        )
        events = 0
        if status == 200:
            connection = http.client.HTTPConnection(host, int(port), timeout=60)
            try:
                connection.request("GET", f"/gradio_api/call/generate/{json.loads(body)['event_id']}")
                response = connection.getresponse()
                for _ in range(rng.randint(2, 12)):  # a few events, then the tab is closed
                    events += response.readline().startswith(b"event:")
            except OSError:
                pass
            connection.close()
        traffic.add(Outcome("leaves mid-stream", start, time.monotonic(), events > 0, f"{events} events read"))
        pause(rng.uniform(0.5, 2), deadline)


def hostile(url: str, traffic: Traffic, deadline: float, seed: int) -> None:
    rng = random.Random(seed)
    while time.monotonic() < deadline:
        start = time.monotonic()
        events = call_events(url, [rng.choice(["ROMEO:", "x" * 20_000, "\ud800", ""]), *rng.choice(HOSTILE)])
        last, data = events[-1] if events else ("nothing", "")
        refused = last == "error" and len(data) > 10 or last == "http 413"  # a sentence, not a crash
        traffic.add(Outcome("hostile settings", start, time.monotonic(), refused, f"{last}: {data[:120]}"))
        pause(rng.uniform(0.2, 1), deadline)


def staller(url: str, traffic: Traffic, deadline: float, fn_index: int) -> None:
    n = 0
    while time.monotonic() < deadline:
        start, n = time.monotonic(), n + 1
        status, _ = post(
            url + "gradio_api/queue/join",
            json.dumps(
                {
                    "data": [PROMPT, 2000, 0.8, 0, 1.0, n, 0.0],
                    "fn_index": fn_index,
                    "session_hash": f"stalled-{n}-{start}",
                    "event_data": None,
                    "trigger_id": None,
                }
            ).encode(),
        )
        traffic.add(Outcome("joins, never reads", start, time.monotonic(), status == 200, f"http {status}"))
        pause(15, deadline)


def uploader(url: str, traffic: Traffic, deadline: float) -> None:
    while time.monotonic() < deadline:
        start = time.monotonic()
        status, _ = post(url + "gradio_api/upload", UPLOAD, "multipart/form-data; boundary=b")
        traffic.add(Outcome("uploads 0.9 MB", start, time.monotonic(), status == 403, f"http {status}"))
        pause(10, deadline)


def kill_model_process(pid: int, traffic: Traffic, at: float) -> None:
    while time.monotonic() < at:
        time.sleep(0.2)
    for child in children(pid):
        os.kill(child, signal.SIGKILL)
        traffic.killed_at = time.monotonic()

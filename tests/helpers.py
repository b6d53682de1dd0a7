"""Helpers shared by the tests: servers started as a user starts them, the browser, raw HTTP
calls, spoiled model files. (Fixtures are in conftest.py.)"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

from conftest import REPO

from benchmarks.load import free_port, wait_until_up


def run_train(*args, **kwargs) -> subprocess.Popen:
    """`python -m train ARGS` in its own process (to be interrupted or killed), its output piped."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-m", "train", *map(str, args)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def node_json(node: str, script: str):
    """What a JavaScript module `script`, run by Node in webapp/web (so that it imports
    './chargpt.js'), prints as JSON."""
    web = REPO / "webapp" / "web"
    command = [node, "--input-type=module", "-e", script]
    return json.loads(subprocess.run(command, cwd=web, capture_output=True, text=True, timeout=60, check=True).stdout)


def wait_for_page(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Until `url` answers 200; a process that exits first fails the test with what it said."""
    try:
        wait_until_up(url, proc, lambda: proc.stderr.read() if proc.stderr else "", timeout)
    except RuntimeError as e:
        raise AssertionError(str(e)) from None


@contextlib.contextmanager
def server(*args: str, stderr=subprocess.DEVNULL, command: tuple[str, ...] = ("-m", "webapp"), env: dict | None = None):
    """`python -m webapp ARGS` (or another command) on a free port of 127.0.0.1: yields (url,
    process) once it answers, and stops it after (SIGTERM, as Ctrl-C or a supervisor would)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, *command, *args, "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
        env=env,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_page(url, proc)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no line per file served
        pass


@contextlib.contextmanager
def static_server(directory: Path, handler=QuietHandler):
    """A static server for `directory` on a free port of 127.0.0.1 (any will do): yields its URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()


def family(pid: int) -> list[int]:
    """A process and its descendants (the server and its model process), from /proc (Linux)."""
    members = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            members += [m for child in (task / "children").read_text().split() for m in family(int(child))]
    return members


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process and its descendants have used (Linux /proc)."""
    total = 0
    for member in family(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants in MB (Linux /proc)."""
    total = 0.0
    for member in family(pid):
        with contextlib.suppress(OSError):
            total += (
                next(
                    int(line.split()[1])
                    for line in Path(f"/proc/{member}/status").read_text().splitlines()
                    if line.startswith("VmRSS:")
                )
                / 1024
            )
    return total


def raw_generate(url: str, data: list, timeout: float = 120, endpoint: str = "generate") -> tuple[str, object]:
    """/generate (or another endpoint) over Gradio's plain HTTP API, with the JSON written here
    (\\u escapes, NaN and all): (the last event's name, its data), or ("http NNN", the body)
    when the request itself is refused."""
    body = json.dumps({"data": data}).encode()  # ensure_ascii: a lone surrogate travels as \\ud800
    request = urllib.request.Request(f"{url}gradio_api/call/{endpoint}", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            event_id = json.loads(r.read())["event_id"]
    except urllib.error.HTTPError as e:
        return f"http {e.code}", e.read().decode("utf-8", "replace")
    with urllib.request.urlopen(f"{url}gradio_api/call/{endpoint}/{event_id}", timeout=timeout) as r:
        lines = r.read().decode().splitlines()
    events = [line.split(": ", 1)[1] for line in lines if line.startswith("event: ")]
    payloads = [json.loads(line.split(": ", 1)[1]) for line in lines if line.startswith("data: ")]
    return events[-1], payloads[-1]


def spoil_ring(path: Path, how: str) -> None:
    """A model's ring file made into one that must not be used: "not onnx", "older" (declared as
    chargpt wrote it before steps took several characters), "another model's", or "altered" (a
    weight changed: it loads and runs, and computes something else)."""
    import onnx

    if how == "not onnx":
        path.write_bytes(b"not a model")
        return
    proto = onnx.load(str(path))
    if how == "older":  # ring_mask [B, slots]
        mask = next(i for i in proto.graph.input if i.name == "ring_mask").type.tensor_type.shape
        del mask.dim[1]
    elif how == "another model's":
        next(p for p in proto.metadata_props if p.key == "source_sha256").value = "0" * 64
    else:
        scale = next(t for t in proto.graph.initializer if t.name.endswith("_scale"))
        values = onnx.numpy_helper.to_array(scale) * 1.5
        scale.CopyFrom(onnx.numpy_helper.from_array(values, scale.name))
    onnx.save(proto, str(path))


def text_of(steps) -> list[str]:
    """Each row's text from Engine.generate's Steps."""
    texts: list[str] = []
    for step in steps:
        texts = texts or [""] * len(step.pieces)
        for r, piece in enumerate(step.pieces):
            texts[r] += "".join(p.char for p in piece)
    return texts


def queue_call(
    url: str, fn_index: int, data: list, event_data=None, session: str = "helper", timeout: float = 120
) -> dict:
    """An event of the page called as the page's own JavaScript calls it (queue/join, then the
    session's stream of messages): its last message (`success`, and `output`: data or error)."""
    body = json.dumps(
        {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": event_data, "trigger_id": None}
    ).encode()
    join = urllib.request.Request(url + "gradio_api/queue/join", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(join, timeout=timeout) as r:
        event_id = json.loads(r.read())["event_id"]
    with urllib.request.urlopen(f"{url}gradio_api/queue/data?session_hash={session}", timeout=timeout) as r:
        for line in r:
            if line.startswith(b"data: "):
                message = json.loads(line[6:])
                if message.get("event_id") == event_id and message.get("msg") == "process_completed":
                    return message
    raise AssertionError(f"no answer to event {event_id}")


def fn_index_of(url: str, event: str) -> int:
    """The page's event of this name: an API name (generate) or a trigger's event (branch)."""
    config = json.loads(urllib.request.urlopen(url + "config", timeout=30).read())
    return next(
        d["id"]
        for d in config["dependencies"]
        if d.get("api_name") == event or any(target[1] == event for target in d.get("targets", []))
    )


def spans_of(html: str) -> list[tuple[str, dict]]:
    """(text, attributes) of every span in /generate's HTML, the prompt's first."""
    from html.parser import HTMLParser

    spans: list[list] = []

    class Reader(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "span":
                spans.append(["", dict(attrs)])

        def handle_data(self, data):
            if spans:
                spans[-1][0] += data

    Reader(convert_charrefs=True).feed(html)
    return [(text, attrs) for text, attrs in spans]


def generated_spans(html: str) -> list[tuple[str, dict]]:
    """(character, attributes) of each generated character's span in /generate's HTML (the
    prompt's span, the first, left out)."""
    return spans_of(html)[1:]


def written_request(html: str) -> dict:
    """The request that wrote /generate's HTML, as its prompt's span carries it (alternatives asked)."""
    return json.loads(spans_of(html)[0][1]["data-request"])

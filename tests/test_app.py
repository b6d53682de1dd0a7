"""The web app as people and programs use it: a launched server, gradio_client, a headless
Chromium, the command line, and a virtual environment holding only requirements.txt."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from benchmarks.load import free_port, running_app, wait_until_up, with_children
from webapp.app import CONCURRENCY, StopPresses

from benchmarks.page import CHROMIUM_ARGS
from conftest import IN_CI, REPO, SCREENSHOTS, chromium_or_skip


@contextlib.contextmanager
def serving(*args: str):
    """`python -m webapp ARGS` on a free port; yields its URL."""
    with running_app(*args) as (url, _):
        yield url


@pytest.fixture(scope="module")
def served(exported, tmp_path_factory):
    """The tiny fixture model: fast, for the API tests. (url, the server's log file)"""
    log = tmp_path_factory.mktemp("served") / "server.log"
    with open(log, "w") as stderr, running_app("--model", str(exported[1]), stderr=stderr) as (url, _):
        yield url, log


@pytest.fixture(scope="module")
def app_url(served):
    return served[0]


@pytest.fixture(scope="module")
def shipped_app_url():
    """The shipped models/chargpt, served with no --model: what `make serve` opens."""
    with serving() as url:
        yield url


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


def test_generate_endpoint_returns_the_full_text_first(client):
    text, colored, stats = client.predict("ROMEO:", 50, 0.8, 0, 1.0, 7, api_name="/generate")
    assert text.startswith("ROMEO:")
    assert len(text) == len("ROMEO:") + 50
    assert "<span" in colored
    assert "50 characters in" in stats
    assert "seed 7" in stats
    again = client.predict("ROMEO:", 50, 0.8, 0, 1.0, 7, api_name="/generate")[0]
    assert again == text  # same seed, same settings, same text


def test_random_seed_is_reported(client):
    _, _, stats = client.predict("ROMEO:", 5, 0.8, 0, 1.0, -1, api_name="/generate")
    assert "seed " in stats
    assert "seed -1" not in stats


@pytest.mark.parametrize("args, message", [
    (("x", 10**9, 0.8, 0, 1.0, 1), "Max_new_tokens must be a whole number from 1 to 2000, not 1000000000."),
    (("x", 10, -1, 0, 1.0, 1), "Temperature must be between 0 \\(greedy\\) and 10, not -1."),
    (("x", 10, 0.8, 0, 0, 1), "Top_p must be above 0 and at most 1"),
    (("x", 10, 0.8, 0, 2, 1), "Top_p must be above 0 and at most 1"),
    (("x", 10, 0.8, -5, 1.0, 1), "Top_k must be a whole number, 0 for off, not -5."),
    (("x", "ten", 0.8, 0, 1.0, 1), "Max_new_tokens must be a whole number from 1 to 2000, not 'ten'."),
    (("x", 10, 0.8, 0, 1.0, 1.5), "Seed must be a whole number"),
    (("x" * 100_000, 10, 0.8, 0, 1.0, 1), "The prompt is 100,000 characters; the limit is 10,000"),
])
def test_bad_api_input_gets_a_sentence_not_a_server_error(client, args, message):
    with pytest.raises(Exception, match=message):
        client.predict(*args, api_name="/generate")


def test_a_refused_request_is_one_line_in_the_servers_log(client, served):
    _, log = served
    before = log.read_text().splitlines()
    with pytest.raises(Exception, match="Max_new_tokens must be a whole number from 1 to 2000, not 100000."):
        client.predict("ROMEO:", 100_000, 0.8, 0, 1.0, 1, api_name="/generate")
    time.sleep(0.5)
    new = log.read_text().splitlines()[len(before):]
    assert len(new) == 1, new
    assert new[0].endswith(" chargpt: refused a request: Max_new_tokens must be a whole number from 1 to 2000, not 100000."), new
    assert "Traceback" not in log.read_text()


def test_the_page_presents_the_model_from_its_metadata(app_url, shipped_app_url, small_text):
    from export.about import example_prompts

    """The tiny model's words were derived from its text at export; the shipped model keeps its own."""
    tiny, shipped = (json.loads(urllib.request.urlopen(url + "config", timeout=30).read()) for url in (app_url, shipped_app_url))
    assert tiny["title"] == "chargpt: small"
    assert shipped["title"] == "chargpt: Shakespeare, one character at a time"
    examples = [[c["props"]["samples"] for c in config["components"] if c["type"] == "dataset"][0] for config in (tiny, shipped)]
    assert examples[0] == [[e] for e in example_prompts(small_text.read_text(encoding="utf-8"))]
    assert "MARCIUS:" in examples[0][0]
    assert examples[1] == [["ROMEO:"], ["JULIET:\nO Romeo, Romeo!"], ["First Citizen:\n"], ["KING RICHARD III:\n"],
                           ["MENENIUS:"], ["PETRUCHIO:\n"]]
    header = [c["props"]["value"] for c in shipped["components"] if c.get("props", {}).get("elem_id") == "about"][0]
    assert "<p>A small character-level GPT trained on Tiny Shakespeare. Write the start of a scene and let it continue.</p>" in header


def test_hostile_prompts_are_handled(client):
    text, colored, stats = client.predict("Café 🙂 <script>alert(1)</script>", 20, 0.8, 0, 1.0, 1, api_name="/generate")
    assert text.startswith("Café 🙂 <script>")
    assert "<script>" not in colored
    assert "&lt;" in colored  # escaped in the coloured view
    assert "replaced 'é'→'e'" in stats
    assert "dropped '🙂'" in stats
    text, _, _ = client.predict("", 20, 0.8, 0, 1.0, 1, api_name="/generate")
    assert text.startswith("\n")
    assert len(text) == 21
    _, _, stats = client.predict("To be, or not to be. " * 50, 5, 0.8, 0, 1.0, 1, api_name="/generate")
    assert "the model reads the last 16 characters of the prompt" in stats  # learned positions: the window
    assert client.predict("ROMEO:", 5, 0.8, 0, 1.0, 1, api_name="/generate")[0].startswith("ROMEO:")  # still healthy


def raw_generate(url: str, data: list, timeout: float = 120) -> tuple[str, object]:
    """/generate over Gradio's plain HTTP API, with the JSON written here (\\u escapes, NaN and
    all): (the last event's name, its data), or ("http NNN", the body) when the request itself
    is refused."""
    body = json.dumps({"data": data}).encode()  # ensure_ascii: a lone surrogate travels as \\ud800
    request = urllib.request.Request(url + "gradio_api/call/generate", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            event_id = json.loads(r.read())["event_id"]
    except urllib.error.HTTPError as e:
        return f"http {e.code}", e.read().decode("utf-8", "replace")
    with urllib.request.urlopen(f"{url}gradio_api/call/generate/{event_id}", timeout=timeout) as r:
        lines = r.read().decode().splitlines()
    events = [line.split(": ", 1)[1] for line in lines if line.startswith("event: ")]
    payloads = [json.loads(line.split(": ", 1)[1]) for line in lines if line.startswith("data: ")]
    return events[-1], payloads[-1]


def test_lone_surrogates_and_control_characters_in_raw_json(app_url):
    event, data = raw_generate(app_url, ["A\ud800B\U0001f642\x00\x1b[2J", 5, 0.8, 0, 1.0, 1])
    assert event == "complete", data
    text, _, stats = data
    assert text.startswith("A\ufffdB\U0001f642\x00\x1b[2J")
    assert "dropped" in stats


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.onnx", "missing.onnx does not exist"),
    (lambda d: (d / "plain.onnx").write_bytes(b"\x08\x07") and d / "plain.onnx", "is not a readable ONNX model"),
])
def test_a_bad_model_at_start_up_is_one_sentence(tmp_path, make, message):
    path = make(tmp_path)
    result = subprocess.run([sys.executable, "-m", "webapp", "--model", str(path), "--port", str(free_port())],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("python -m webapp: error: ")
    assert message in result.stderr
    assert result.stderr.count("\n") == 1


def test_generate_command_prints_a_reproducible_sample(exported):
    cmd = [sys.executable, "-m", "webapp", "generate", "--model", str(exported[1]), "--prompt", "ROMEO:",
           "--seed", "3", "--max-new-tokens", "80"]
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("ROMEO:")
    assert len(first.stdout) == len("ROMEO:") + 80 + 1
    assert subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120).stdout == first.stdout


def test_stop_reaches_the_running_or_queued_generation_and_is_forgotten_after():
    """StopPresses, as the page's events drive it (the browser test below presses the buttons)."""
    from types import SimpleNamespace as Request

    stops, alice, bob = StopPresses(), Request(session_hash="alice"), Request(session_hash="bob")
    stops.stop_pressed(alice)  # nothing running: forgotten
    stops.generate_pressed(alice)
    flag = stops.flag("alice")
    assert not flag.is_set()
    stops.generate_pressed(alice)  # pressed again while it runs (Gradio ignores it): Stop still reaches it
    assert stops.flag("alice") is flag
    stops.stop_pressed(bob)  # another visitor's Stop
    assert not flag.is_set()
    stops.stop_pressed(alice)  # while queued or running: the generation sees it
    assert flag.is_set() and stops.flag("alice") is flag
    stops.generate_pressed(alice)  # Generate again before the stopped one has finished
    assert not stops.flag("alice").is_set()
    stops.finished("alice", flag)  # the stopped one's end leaves the new flag
    assert not stops.flag("alice").is_set() and len(stops) == 1
    stops.finished("alice", stops.flag("alice"))
    assert len(stops) == 0
    assert not stops.flag(None).is_set()  # an API call without a session: a flag of its own
    assert len(stops) == 0
    for n in range(StopPresses.MAX_SESSIONS + 10):  # Generate pressed, the request never ran
        stops.generate_pressed(Request(session_hash=f"visitor {n}"))
    assert len(stops) == StopPresses.MAX_SESSIONS


def assert_stopped_cleanly(page, prompt: str) -> None:
    """After Stop: the stats line says so, no output shows Gradio's "Error", and the plain
    text is the coloured text (the generation ended as a finished one does)."""
    page.wait_for_function("() => document.querySelector('#stats').innerText.includes('stopped')", timeout=30_000)
    assert "Error" not in page.locator("body").inner_text()
    plain = page.locator("#output textarea").input_value()
    assert plain.startswith(prompt)
    assert page.locator("#colored").inner_text().replace("\n", "") == plain.replace("\n", "")


def test_the_page_streams_text_in_a_real_browser(shipped_app_url):
    from playwright.sync_api import sync_playwright

    chromium = chromium_or_skip()
    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(shipped_app_url, wait_until="networkidle")
            page.get_by_label("Prompt").fill("JULIET:\n")
            length = page.locator("input[type=number]").first  # "Characters to generate"
            length.fill("2000")
            length.press("Enter")
            page.get_by_role("button", name="Generate").click()
            sizes = []
            deadline = time.time() + 60
            while time.time() < deadline:
                sizes.append(len(page.locator("#output textarea").input_value()))
                if sizes[-1] >= len("JULIET:\n") + 2000:
                    break
                time.sleep(0.05)
            growing = sorted(set(s for s in sizes if 0 < s < len("JULIET:\n") + 2000))
            assert len(growing) >= 3, f"text did not stream: sizes seen {sorted(set(sizes))}"
            assert sizes[-1] == len("JULIET:\n") + 2000
            assert page.locator("#output textarea").input_value().startswith("JULIET:\n")
            assert "2000 characters in" in page.locator("#stats").inner_text()
            assert page.locator("#colored span[title]").count() >= 2000
            # Stop ends a generation half way: the text stops growing short of its length.
            # Stop is clicked from the page itself the moment text arrives, so that the click
            # cannot lose a race with a fast machine finishing the 2000 characters first.
            page.get_by_label("Prompt").fill("ROMEO:\n")
            page.get_by_role("button", name="Generate").click()
            page.wait_for_function("""() => {
                const t = document.querySelector('#output textarea').value;
                if (!(t.startsWith('ROMEO:') && t.length > 30)) return false;
                [...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Stop').click();
                return true;
            }""", polling="raf")
            page.wait_for_timeout(1500)
            stopped = len(page.locator("#output textarea").input_value())
            page.wait_for_timeout(1000)
            assert len(page.locator("#output textarea").input_value()) == stopped < len("ROMEO:\n") + 2000
            assert_stopped_cleanly(page, "ROMEO:\n")
            # Stop pressed a tenth of a second after Generate, before any text has come, still
            # stops it (Gradio's own cancel sometimes lost such a press, or showed "Error").
            page.get_by_label("Prompt").fill("JULIET:\n")
            page.evaluate("""() => {
                const button = name => [...document.querySelectorAll('button')].find(b => b.innerText.trim() === name);
                button('Generate').click();
                setTimeout(() => button('Stop').click(), 100);
            }""")
            page.wait_for_function("""() => document.querySelector('#output textarea').value.startsWith('JULIET:')
                && document.querySelector('#stats').innerText.includes('stopped')""", timeout=30_000)
            assert_stopped_cleanly(page, "JULIET:\n")
            assert len(page.locator("#output textarea").input_value()) < len("JULIET:\n") + 2000
            page.get_by_text("About the model").click()
            page.wait_for_timeout(500)
            page.screenshot(path=str(SCREENSHOTS / "webapp.png"), full_page=True)
        finally:
            browser.close()


@pytest.mark.skipif(not IN_CI and os.environ.get("CHARGPT_VENV_TEST") != "1",
                    reason="slow (installs requirements.txt into a new venv): runs in CI, or set CHARGPT_VENV_TEST=1")
def test_the_app_runs_from_requirements_txt_alone(tmp_path, exported):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    install = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "-r", str(REPO / "requirements.txt")],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-2000:]
    check = subprocess.run([str(py), "-c", "import importlib.util as u; assert u.find_spec('torch') is None; "
                            "import webapp.app, webapp.engine; print('ok')"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert check.stdout.strip() == "ok", check.stderr
    sample = subprocess.run([str(py), "-m", "webapp", "generate", "--model", str(exported[1]), "--prompt", "ROMEO:",
                             "--max-new-tokens", "40"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert sample.returncode == 0, sample.stderr
    assert sample.stdout.startswith("ROMEO:"), sample.stderr
    port = free_port()
    proc = subprocess.Popen([str(py), "webapp/app.py", "--model", str(exported[1]), "--port", str(port)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/", proc)  # started the way a Space starts it
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_bad_queue_settings_are_one_sentence():
    result = subprocess.run([sys.executable, "-m", "webapp", "--queue-size", "-1"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert f"--queue-size at least 0, not {CONCURRENCY} and -1" in result.stderr


# --- the security review's checks (SECURITY.md) ----------------------------------------------

def listening_addresses(port: int) -> set[str]:
    """The local IPv4 addresses a TCP port listens on, from /proc/net/tcp (Linux)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":  # LISTEN
            found.add(".".join(str(b) for b in reversed(bytes.fromhex(address))))
    return found


def test_the_server_listens_on_loopback_only(app_url):
    assert listening_addresses(int(app_url.rsplit(":", 1)[1].strip("/"))) == {"127.0.0.1"}


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_no_file_outside_the_served_ones_can_be_read(app_url, exported):
    model = exported[1]
    file_url = app_url + "gradio_api/file="
    assert http_status(file_url + str(model.with_suffix(".loss.png"))) == 200  # the page shows it
    for path in ("/etc/passwd", str(model), str(model.with_suffix(".json")), str(REPO / "README.md"),
                 f"{model.parent}/../{model.parent.name}/{model.name}", str(model.with_suffix(".loss.png")) + "/../" + model.name):
        assert http_status(file_url + path) in (403, 404), path


def test_an_oversized_request_is_refused_before_it_is_read(app_url):
    event, body = raw_generate(app_url, ["x" * (5 * 2**20), 10, 0.8, 0, 1.0, 1])  # 5 MB; the limit is 1 MB
    assert event == "http 413"
    assert "a prompt may have at most 10,000 characters" in json.loads(body)["detail"]
    assert raw_generate(app_url, ["ROMEO:", 5, 0.8, 0, 1.0, 1])[0] == "complete"


def test_an_oversized_chunked_request_is_counted_and_refused(app_url):
    import http.client

    host, port = app_url.split("//")[1].strip("/").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    chunks = (b'{"data": ["' + b"x" * 100_000 if i == 0 else b"x" * 100_000 for i in range(20))  # 2 MB, no Content-Length
    connection.request("POST", "/gradio_api/call/generate", body=chunks, encode_chunked=True,
                       headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 413
    assert "a prompt may have at most" in json.loads(response.read())["detail"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process and its descendants (the model process) have used (Linux /proc)."""
    total = 0
    for member in with_children(pid):
        fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def cpu_share(pid: int, seconds: float) -> float:
    """Cores a process keeps busy over the next `seconds`."""
    start = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - start) / seconds


def test_a_visitor_who_disconnects_costs_nothing_after_the_disconnect(tmp_path):
    """A visitor's process killed mid-stream (a closed tab, a dropped connection): the server
    stops generating for it, so its cores fall back to what they use idle."""
    visitor = tmp_path / "visitor.py"
    visitor.write_text("import sys, time\nfrom gradio_client import Client\n"
                       "Client(sys.argv[1], verbose=False).submit('ROMEO:', 2000, 0.8, 0, 1.0, 1, api_name='/generate')\n"
                       "time.sleep(600)\n")
    with running_app() as (url, server):
        idle = cpu_share(server.pid, 1.0)
        process = subprocess.Popen([sys.executable, str(visitor), url], cwd=REPO)
        try:
            deadline = time.time() + 60
            while (busy := cpu_share(server.pid, 0.5)) < 0.5 and time.time() < deadline:
                pass  # until it generates
        finally:
            process.kill()
            process.wait()
        time.sleep(0.5)
        after = cpu_share(server.pid, 2.0)
    assert busy >= 0.5  # it was generating for the visitor: about a core or more
    assert after < max(0.25, 2 * idle)


def test_the_server_settles_matplotlib_before_its_first_visitor():
    """Gradio asks matplotlib for its backend around each request, and the first ask imports
    pyplot (most of a second here): launch asks first, so that no visitor waits for it."""
    pytest.importorskip("matplotlib")
    script = ("import sys\nfrom webapp.server import settle_matplotlib\n"
              "before = 'matplotlib.pyplot' in sys.modules\nsettle_matplotlib()\nprint(before, 'matplotlib.pyplot' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO, check=True)
    assert result.stdout.split() == ["False", "True"]

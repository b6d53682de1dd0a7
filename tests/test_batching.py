"""The server's batch: the decoding loop in a thread of its own (Batcher) and in a process of its
own (ModelProcess, as the server runs it), fed by visitors' threads: each text is exactly the
text alone, a visitor who stops leaves the batch, and what happens when the model process stops,
cannot start, or outlives its server. The loop itself is tested tick by tick in test_loop.py."""

import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
from conftest import REPO
from helpers import text_of

from webapp.inference.batching import Batcher
from webapp.inference.engine import Engine, encode_prompt
from webapp.inference.onnx_model import SHIPPED_MODEL
from webapp.inference.sampling import SamplingParams
from webapp.server.model_process import ModelProcess, ModelProcessError
from webapp.server.page import serving_batcher


@pytest.fixture(scope="module")
def engine():
    return Engine(SHIPPED_MODEL)


@pytest.fixture(params=["thread", "process"])
def batcher(request, engine):
    if request.param == "thread":
        yield Batcher(engine)
        return
    process = ModelProcess(engine.path)
    yield process
    process.close()


def generate(engine: Engine, batcher, prompt: str, params: SamplingParams):
    return engine.generate(encode_prompt(prompt, engine.vocab), params, batcher.decode)


def test_the_alternatives_in_a_batch_are_those_alone(engine, batcher):
    """Two visitors at once, one asking for alternatives (as the page does) and one not (as an
    API caller): each gets the pieces it gets alone, alternatives and all, through the thread's
    queue or the model process's messages (the probabilities within 1e-5: a crowd's steps draft
    fewer characters, and a step's logits move in their last bits with its length)."""
    asked = SamplingParams(max_new_tokens=60, temperature=0.9, top_k=20, seed=3, alternatives=5)
    plain = SamplingParams(max_new_tokens=60, temperature=0.9, seed=4)
    want = [
        [p for step in engine.generate(encode_prompt(prompt, engine.vocab), params) for p in step.pieces[0]]
        for prompt, params in (("ROMEO:", asked), ("JULIET:", plain))
    ]
    got = [None, None]

    def visit(i, prompt, params):
        got[i] = [p for step in generate(engine, batcher, prompt, params) for p in step.pieces[0]]

    threads = [
        threading.Thread(target=visit, args=(0, "ROMEO:", asked)),
        threading.Thread(target=visit, args=(1, "JULIET:", plain)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [[p.char for p in pieces] for pieces in got] == [[p.char for p in pieces] for pieces in want]
    assert all(p.alternatives is None for p in got[1])
    for mine, alone in zip(got[0], want[0]):
        assert [c for c, _, _ in mine.alternatives] == [c for c, _, _ in alone.alternatives]
        assert (
            max(abs(a - b) for x, y in zip(mine.alternatives, alone.alternatives) for a, b in zip(x[1:], y[1:])) <= 1e-5
        )


def test_a_crowd_gets_its_texts_alone_and_a_visitor_who_stops_leaves_the_batch(engine, batcher):
    """Visitors arriving a few steps apart, greedy and sampled, two samples, stop strings (which
    end a request from the consumer's side), and one who stops reading half way."""
    cases = [
        (
            "ROMEO:\n",
            SamplingParams(
                max_new_tokens=40 + 17 * i,
                temperature=(0, 0.8, 1.1)[i % 3],
                top_k=(0, 12)[i % 2],
                min_p=(0.0, 0.05)[i % 2],
                seed=i,
                num_samples=1 + (i == 4),
                stop="\n\n" if i % 4 == 1 else None,
            ),
        )
        for i in range(8)
    ]
    want = [engine.complete(prompt, params) for prompt, params in cases]
    got = [None] * len(cases)
    start = threading.Barrier(len(cases) + 1)

    def visit(i):
        start.wait()
        time.sleep(0.003 * (i % 4))
        got[i] = text_of(generate(engine, batcher, *cases[i]))

    threads = [threading.Thread(target=visit, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    leaving = generate(engine, batcher, "JULIET:", SamplingParams(max_new_tokens=2000, seed=1))
    start.wait()
    next(leaving)
    leaving.close()  # what Gradio does on Stop or a closed tab
    for t in threads:
        t.join(timeout=120)
    assert got == want
    deadline = time.time() + 0.5  # the one who left would need seconds more for its 2000 characters
    while batcher.active_rows() and time.time() < deadline:
        time.sleep(0.01)
    assert batcher.active_rows() == 0


def test_a_stopped_model_process_fails_its_requests_in_one_sentence_and_the_next_request_starts_another(engine):
    process = ModelProcess(engine.path)
    try:
        stream = generate(engine, process, "ROMEO:", SamplingParams(max_new_tokens=2000, seed=1))
        next(stream)
        process._child.kill()  # as the out-of-memory killer would
        with pytest.raises(
            ModelProcessError, match=r"^The model process stopped \(exit code -9\); ask again to start a new one\.$"
        ):
            for _ in stream:
                pass
        params = SamplingParams(max_new_tokens=120, temperature=0.8, seed=5)
        assert text_of(generate(engine, process, "JULIET:", params)) == engine.complete("JULIET:", params)
    finally:
        process.close()


def test_a_model_process_that_cannot_load_its_model_says_why(tmp_path):
    with pytest.raises(
        ModelProcessError, match="^The model process could not start: model .*missing.onnx does not exist"
    ):
        ModelProcess(tmp_path / "missing.onnx")


def test_the_server_decodes_in_its_own_process_when_the_model_process_cannot_start(tmp_path, capsys):
    """The model file changed on disk after the server loaded it: the child refuses it (its SHA-256
    no longer matches the sidecar), and the server says so and batches in its own process."""
    folder = tmp_path / "model"
    shutil.copytree(SHIPPED_MODEL, folder)
    engine = Engine(folder)
    model = folder / "onnx" / "model.onnx"
    model.write_bytes(model.read_bytes()[:1000])
    batcher = serving_batcher(engine)
    assert isinstance(batcher, Batcher)
    said = capsys.readouterr().err
    assert "could not start" in said and "does not match the SHA-256" in said and "own process instead" in said
    params = SamplingParams(max_new_tokens=30, temperature=0.8, seed=2)
    assert text_of(generate(engine, batcher, "a", params)) == engine.complete("a", params)


def test_the_model_process_ends_with_its_server_however_the_server_ends():
    """A server killed outright (SIGKILL: no cleanup runs) leaves no model process behind."""
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import time; from webapp.server.model_process import ModelProcess; from "
                "webapp.inference.onnx_model import SHIPPED_MODEL\n"
                "p = ModelProcess(SHIPPED_MODEL / 'onnx' / 'model.onnx'); print(p._child.pid, flush=True); "
                "time.sleep(600)"
            ),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        child = int(server.stdout.readline())
        os.kill(child, 0)  # running
    finally:
        server.kill()
        server.wait()
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            with open(f"/proc/{child}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":  # a zombie is gone as far as anyone is concerned
                    return
        except OSError:
            return
        time.sleep(0.1)
    os.kill(child, 9)
    pytest.fail("the model process outlived its server by 20 s")

"""The server's model loop in a process of its own (webapp/model_process.py): what happens when
that process stops, cannot start, or outlives its server. Its texts are tested with the batcher's
(tests/test_batching.py)."""

import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import REPO
from webapp.app import serving_batcher
from webapp.batching import Batcher
from webapp.engine import Engine, Settings, encode_prompt
from webapp.model_process import ModelProcess, ModelProcessError
from webapp.onnx_model import SHIPPED_MODEL


def text_of(engine: Engine, steps) -> str:
    return "".join(c for step in steps for c, _ in step.pieces[0])


def test_a_stopped_model_process_fails_its_requests_in_one_sentence_and_the_next_request_starts_another():
    engine = Engine(SHIPPED_MODEL)
    process = ModelProcess(engine.path)
    try:
        stream = engine.generate(encode_prompt("ROMEO:", engine.vocab), Settings(max_new_tokens=2000, seed=1), process.decode)
        next(stream)
        process._child.kill()  # as the out-of-memory killer would
        with pytest.raises(ModelProcessError, match=r"^The model process stopped \(exit code -9\); ask again to start a new one\.$"):
            for _ in stream:
                pass
        settings = Settings(max_new_tokens=120, temperature=0.8, seed=5)
        again = text_of(engine, engine.generate(encode_prompt("JULIET:", engine.vocab), settings, process.decode))
        assert again == engine.complete("JULIET:", settings)[0]
    finally:
        process.close()


def test_a_model_process_that_cannot_load_its_model_says_why(tmp_path):
    with pytest.raises(ModelProcessError, match="^The model process could not start: model .*missing.onnx does not exist"):
        ModelProcess(tmp_path / "missing.onnx")


def test_the_server_decodes_in_its_own_process_when_the_model_process_cannot_start(exported, tmp_path, capsys):
    """The model file changed on disk after the server loaded it: the child refuses it (its SHA-256
    no longer matches the sidecar), and the server says so and batches in its own process."""
    model = tmp_path / exported[1].name
    shutil.copy(exported[1], model)
    shutil.copy(exported[1].with_suffix(".json"), model.with_suffix(".json"))
    engine = Engine(model)
    model.write_bytes(model.read_bytes()[:1000])
    batcher = serving_batcher(engine)
    assert isinstance(batcher, Batcher)
    said = capsys.readouterr().err
    assert "could not start" in said and "does not match the SHA-256" in said and "own process instead" in said
    settings = Settings(max_new_tokens=30, temperature=0.8, seed=2)
    assert text_of(engine, engine.generate(encode_prompt("a", engine.vocab), settings, batcher.decode)) == engine.complete("a", settings)[0]


def test_the_model_process_ends_with_its_server_however_the_server_ends():
    """A server killed outright (SIGKILL: no cleanup runs) leaves no model process behind."""
    server = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from webapp.model_process import ModelProcess; from webapp.onnx_model import SHIPPED_MODEL\n"
        "from webapp.engine import Engine\n"
        "p = ModelProcess(Engine(SHIPPED_MODEL).path); print(p._child.pid, flush=True); time.sleep(600)")],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        child = int(server.stdout.readline())
        os.kill(child, 0)  # running
    finally:
        server.kill()
        server.wait()
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        try:  # a zombie is gone as far as anyone is concerned
            with open(f"/proc/{child}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except OSError:
            return
        time.sleep(0.1)
    os.kill(child, 9)
    pytest.fail("the model process outlived its server by 20 s")

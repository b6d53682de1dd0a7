"""The server's model loop in a process of its own: a Batcher (webapp/inference/batching.py) on its
own Engine, behind `ModelProcess.decode`, which keeps Batcher.decode's contract.

Why a process: in the web server's process every tick's Python (sampling, the ring's bookkeeping,
the drafts) needs the GIL, which Gradio's event loop and the threads streaming each visitor's text
hold in turn, so the loop's thread waits for them between its steps. In its own process nothing
else runs Python beside it, and the server's Python runs on another core meanwhile: crowds finish
sooner (docs/serving.md has the figures).

The two processes talk over the child's stdin and stdout, one pickled message at a time:
- to the child: ("start", id, prompt ids, SamplingParams), ("cancel", id), ("rows", 0);
- from it: ("ready", None) once loaded (or ("failed", why)), then after every tick one
  ("tick", [(id, item), ...]) with each request's characters of that tick, each item a Draw's
  arrays as lists (`as_lists`), END after a request's last one, or an error's message; and
  ("rows", n) in answer to "rows".
The child ends when its stdin closes (the server exited, however it did).
"""

from __future__ import annotations

import itertools
import os
import pickle
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from webapp.inference.batching import Batcher
from webapp.inference.engine import Engine
from webapp.inference.loop import FINISHED, Draw
from webapp.inference.sampling import Alternatives, SamplingParams

END = None  # a request's last message
STARTUP_TIMEOUT_S = 300  # loading and checking a model takes seconds; a cold disk or a GPU can take longer
REPO = Path(__file__).resolve().parents[2]


def as_lists(draw: Draw) -> tuple:
    """A Draw as plain lists, which pickle faster than small arrays."""
    alternatives = draw.alternatives and tuple(a.tolist() for a in draw.alternatives)
    return draw.ids.tolist(), draw.probs.tolist(), alternatives


def from_lists(item: tuple) -> Draw:
    ids, probs, alternatives = item
    return Draw(np.array(ids), np.array(probs), alternatives and Alternatives(*map(np.array, alternatives)))


def send(stream: BinaryIO, message) -> None:
    """One message: its pickle's length (4 bytes, little-endian), then the pickle."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(len(data).to_bytes(4, "little") + data)
    stream.flush()


def receive(stream: BinaryIO):
    """The next message; EOFError when the other side has closed the stream."""
    header = stream.read(4)
    if len(header) < 4:
        raise EOFError
    data = stream.read(int.from_bytes(header, "little"))
    if len(data) < int.from_bytes(header, "little"):
        raise EOFError
    return pickle.loads(data)


class ModelProcessError(RuntimeError):
    """The model process could not start, or stopped; the message says which, in one sentence."""


class ModelProcess:
    """Batcher.decode's contract, served by a child process (`python -m webapp.server.model_process`)
    that loads the model file at `path` on `device`. A child that stops (killed, out of memory)
    fails the requests it was serving with ModelProcessError, and the next request starts a new one."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        self.path, self.device = str(path), device
        self._lock = threading.Lock()  # the child's stdin, the table of requests, and (re)starting
        self._waiting: dict[int, queue.SimpleQueue] = {}  # request id -> its consumer's queue
        self._ids = itertools.count()
        self._child: subprocess.Popen | None = None
        with self._lock:
            self._start()

    @classmethod
    def for_engine(cls, engine: Engine) -> ModelProcess:
        """A model process for the server's engine: the same file, on the provider it runs on."""
        return cls(engine.path, "cuda" if engine.provider == "CUDAExecutionProvider" else "cpu")

    def _start(self) -> None:
        """Start the child and wait until its model is loaded (called holding the lock)."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        child = subprocess.Popen(
            [sys.executable, "-m", "webapp.server.model_process", self.path, self.device],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        answer: list = []
        reader = threading.Thread(target=lambda: answer.append(self._first_message(child)), daemon=True)
        reader.start()
        reader.join(STARTUP_TIMEOUT_S)
        kind, said = answer[0] if answer else ("failed", f"it did not load the model in {STARTUP_TIMEOUT_S} s")
        if kind != "ready":
            child.kill()
            raise ModelProcessError(f"The model process could not start: {said}")
        self._child = child
        threading.Thread(target=self._dispatch, args=(child,), name="chargpt-model-process", daemon=True).start()

    @staticmethod
    def _first_message(child: subprocess.Popen):
        try:
            return receive(child.stdout)
        except (EOFError, OSError, pickle.UnpicklingError):
            return "failed", f"it exited with code {child.wait()} (its error is above, on stderr)"

    def _dispatch(self, child: subprocess.Popen) -> None:
        """Hand each tick's characters to their requests' queues, until the child stops."""
        try:
            while True:
                kind, payload = receive(child.stdout)
                if kind == "tick":
                    for rid, item in payload:
                        waiting = self._waiting.get(rid)
                        if waiting is not None:
                            waiting.put(item)
                elif kind == "rows" and (asking := self._waiting.get(-1)) is not None:
                    asking.put(payload)
        except (EOFError, OSError, pickle.UnpicklingError):
            pass
        code = child.wait()
        with self._lock:
            if self._child is child:
                self._child = None
            stranded, self._waiting = self._waiting, {}
        for waiting in stranded.values():
            waiting.put(f"the model process stopped (exit code {code}); ask again to start a new one")

    def _send(self, message) -> None:
        """Send to the child, starting one if none runs (called holding the lock)."""
        if self._child is None:
            self._start()
        try:
            send(self._child.stdin, message)
        except OSError:  # it stopped a moment ago: its dispatcher fails the others
            raise ModelProcessError("The model process stopped; ask again to start a new one.") from None

    def decode(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[Draw]:
        """As Engine.decode; closing the iterator (or dropping it) takes the request out of its batch."""
        rid, waiting = next(self._ids), queue.SimpleQueue()
        with self._lock:
            self._waiting[rid] = waiting
            try:
                self._send(("start", rid, list(prompt_ids), params))
            except ModelProcessError:
                del self._waiting[rid]
                raise
        ended = False
        try:
            while True:
                item = waiting.get()
                if item is END:
                    ended = True
                    return
                if isinstance(item, str):
                    ended = True
                    raise ModelProcessError(item[0].upper() + item[1:] + ("" if item.endswith(".") else "."))
                yield from_lists(item)
        finally:
            with self._lock:
                if self._waiting.pop(rid, None) is not None and not ended and self._child is not None:
                    try:
                        send(self._child.stdin, ("cancel", rid))
                    except OSError:
                        pass

    def active_rows(self) -> int:
        """The rows the child's batcher is decoding now (for tests)."""
        with self._lock:
            self._waiting[-1] = answer = queue.SimpleQueue()
            self._send(("rows", 0))
        try:
            return answer.get(timeout=30)
        finally:
            self._waiting.pop(-1, None)

    def close(self) -> None:
        """Stop the child (it also stops by itself when this process exits)."""
        with self._lock:
            child, self._child = self._child, None
        if child is not None:
            child.stdin.close()
            child.wait(timeout=30)


class Outlet:
    """A request's `out` in the child: its characters join the tick's message."""

    def __init__(self, rid: int, tick: list, requests: dict):
        self.rid, self.tick, self.requests = rid, tick, requests

    def put(self, item) -> None:
        if item is FINISHED or isinstance(item, BaseException):
            self.requests.pop(self.rid, None)
            self.tick.append((self.rid, END if item is FINISHED else f"{type(item).__name__}: {item}"))
        else:
            self.tick.append((self.rid, as_lists(item)))


def serve(model: str, device: str, inbox: BinaryIO, outbox: BinaryIO) -> int:
    """The child: load the model, then run requests from `inbox` until it closes."""
    try:
        engine = Engine.for_server(model, device)
    except Exception as e:  # ModelLoadError, or a runtime's own
        send(outbox, ("failed", str(e)))
        return 1
    writing = threading.Lock()  # the batcher thread sends ticks, this one answers "rows"
    tick: list = []  # this tick's (id, item) pairs, written by the batcher thread only
    requests = {}  # id -> Request, for "cancel"

    def flush() -> None:
        if tick:
            with writing:
                send(outbox, ("tick", tick[:]))
            tick.clear()

    batcher = Batcher(engine, after_tick=flush)
    send(outbox, ("ready", None))  # the server's own engine has said what this one would
    while True:
        try:
            kind, rid, *rest = receive(inbox)
        except EOFError:
            return 0  # the server has gone
        if kind == "start":
            requests[rid] = batcher.submit(*rest, out=Outlet(rid, tick, requests))
        elif kind == "cancel":
            request = requests.pop(rid, None)
            if request is not None:
                request.cancelled = True
        elif kind == "rows":
            with writing:
                send(outbox, ("rows", batcher.active_rows()))


def main() -> int:
    # Messages go out on a copy of stdout; stdout itself becomes stderr, so that anything a
    # library prints cannot break them.
    outbox = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return serve(sys.argv[1], sys.argv[2], sys.stdin.buffer, outbox)


if __name__ == "__main__":
    sys.exit(main())

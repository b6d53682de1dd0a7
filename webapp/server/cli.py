"""`python -m webapp` serves the page; `python -m webapp generate --prompt ...` prints a sample."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable

from webapp.inference.batching import CONCURRENCY, QUEUE_SIZE
from webapp.inference.engine import Engine, encode_prompt
from webapp.inference.onnx_model import SHIPPED_MODEL, ModelLoadError
from webapp.inference.sampling import MAX_NEW_TOKENS, SamplingParams, SettingsError

USAGE_ERROR = 2


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=str(SHIPPED_MODEL),
        help="a model folder or its .onnx file (default: the shipped models/chargpt)",
    )
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="onnxruntime provider; auto uses CUDA when available, cuda falls back to CPU with a notice",
    )


def serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m webapp",
        description="Serve the chargpt Gradio page and its /generate API. See also: python -m webapp generate --help",
    )
    add_model_args(p)
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=None, help="port (default 7860, or GRADIO_SERVER_PORT)")
    p.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link")
    p.add_argument(
        "--concurrency",
        type=int,
        default=CONCURRENCY,
        help=f"requests decoding at once, their steps batched together (default {CONCURRENCY})",
    )
    p.add_argument(
        "--queue-size",
        type=int,
        default=QUEUE_SIZE,
        help=f"requests that may wait; more are turned away with 'Queue is full' (default {QUEUE_SIZE})",
    )
    p.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="stop serving when the process that started this one ends, however it ends (make serve uses it)",
    )
    return p


def exit_with_parent() -> None:
    """Stop this server, as Ctrl-C would, once its parent process is gone. `make serve` runs the
    server as make's child, and make passes on SIGTERM but not SIGINT or SIGHUP, and nothing
    survives SIGKILL: without this, stopping make by its process id would leave the server running."""
    import os
    import signal
    import threading
    import time

    parent = os.getppid()

    def watch():
        while os.getppid() == parent:  # an orphan is adopted by another process
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def stop_within(seconds: float = 5, before_exit: Callable[[], None] = lambda: None) -> None:
    """Ctrl-C, SIGTERM (what `kill`, make and a Space's shutdown send) and exit_with_parent's
    SIGINT all stop the server as Ctrl-C does, through its own shutdown and `finally` blocks; if
    it has not gone within `seconds`, before_exit() runs and the process ends anyway: in two CI
    runs, with the other test worker busy, a server stopped just after it first answered kept
    serving, and make waited for it (the cause was not found: it did not happen alone or beside
    busy loops)."""
    import os
    import signal
    import threading

    def forced_exit():
        before_exit()
        os._exit(130)

    def on_stop(signum, frame):
        timer = threading.Timer(seconds, forced_exit)
        timer.daemon = True  # a shutdown that finishes in time is not held up
        timer.start()
        signal.default_int_handler(signum, frame)  # KeyboardInterrupt, as Ctrl-C

    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)


def generate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m webapp generate", description="Print a sample from the terminal.")
    add_model_args(p)
    p.add_argument("--prompt", default="", help="text to continue (default: a newline)")
    p.add_argument("--max-new-tokens", type=int, default=300, help=f"characters to generate (1 to {MAX_NEW_TOKENS})")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    p.add_argument(
        "--min-p",
        type=float,
        default=0.0,
        help="keep the characters at least this times as likely as the likeliest; 0 = off",
    )
    p.add_argument("--seed", type=int, default=0, help="same seed and settings, same text")
    p.add_argument("--stop", help="stop before this string appears")
    p.add_argument("--num-samples", type=int, default=1, help="continuations sampled together in one batch")
    return p


def fail(prog: str, message: str) -> int:
    """A usage error as every command reports one (train/usage.py's twin: webapp never imports train)."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return USAGE_ERROR


def generate_main(argv: list[str]) -> int:
    args = generate_parser().parse_args(argv)
    try:
        params = SamplingParams(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            min_p=args.min_p,
            seed=args.seed,
            stop=args.stop,
            num_samples=args.num_samples,
        )
        engine = Engine(args.model, args.device)
    except (SettingsError, ModelLoadError) as e:
        return fail("python -m webapp generate", str(e))
    encoded = encode_prompt(args.prompt, engine.vocab)
    for notice in (engine.notice, encoded.notice()):
        if notice:
            print(f"note: {notice}", file=sys.stderr)
    if params.num_samples == 1:  # stream it as it is generated
        print(args.prompt, end="", flush=True)
        for step in engine.generate(encoded, params):
            print("".join(p.char for p in step.pieces[0]), end="", flush=True)
        print()
        return 0
    for r, text in enumerate(engine.complete(encoded, params)):
        print(f"--- sample {r + 1} (seed {params.seed + r}) ---\n{args.prompt}{text}")
    return 0


def serve_main(argv: list[str]) -> int:
    args = serve_parser().parse_args(argv)
    if args.concurrency < 1 or args.queue_size < 0:
        return fail(
            "python -m webapp",
            f"--concurrency must be at least 1 and --queue-size at least 0, not {args.concurrency} and "
            f"{args.queue_size}.",
        )
    try:
        engine = Engine.for_server(args.model, args.device)
    except ModelLoadError as e:
        return fail("python -m webapp", str(e))
    if engine.notice:
        print(f"note: {engine.notice}", file=sys.stderr)
    from webapp.server.temp_folder import private_temp_folder

    with private_temp_folder() as temp:
        from webapp.server.launch import launch  # gradio, only where a page is served
        from webapp.server.page import build_demo

        stop_within(before_exit=lambda: shutil.rmtree(temp, ignore_errors=True))
        if args.exit_with_parent:
            exit_with_parent()
        launch(
            build_demo(engine, args.concurrency, args.queue_size),
            engine.path,
            host=args.host,
            port=args.port,
            share=args.share,
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["generate"]:
        return generate_main(argv[1:])
    return serve_main(argv)

"""`python -m export`: its subcommands, each in a module of its own.

    python -m export RUN_DIR [--out DIR/ | NAME.onnx] [--quantize int8]   export_command.py
    python -m export eval MODEL [--data FILE]      onnxruntime alone           eval_command.py
    python -m export about FOLDER --title ...      rewrite what pages say      about_command.py
    python -m export attention MODEL               add the attention file      attention_command.py

Each imports what it needs when it runs: `eval` needs neither torch nor the exporter."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command, rest = (argv[0], argv[1:]) if argv[:1] in (["eval"], ["about"], ["attention"]) else (None, argv)
    if command == "eval":
        from .eval_command import eval_main as run
    elif command == "about":
        from .about_command import about_main as run
    elif command == "attention":
        from .attention_command import attention_main as run
    else:
        from .export_command import export_main as run
    return run(rest)

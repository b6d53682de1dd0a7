"""The Space's entry point: `python webapp/app.py` from the repository root (what a Gradio Space
runs; see the README's front matter) serves as `python -m webapp` does, with the same flags.
`gradio webapp/app.py` finds `demo` here, the page on the shipped model, built on first use."""

import sys
from pathlib import Path

if __name__ == "__main__" and __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python webapp/app.py`, as Spaces run it


def __getattr__(name: str):
    if name == "demo":  # built on first use, not at import
        from webapp.server.page import default_demo

        return default_demo()
    raise AttributeError(name)


if __name__ == "__main__":
    from webapp.server.cli import main

    sys.exit(main())

"""Serving the page: the files it may hand out, the request size limit, refusals in the log.

Gradio serves; this module only decides what it serves and how (docs/reliability.md).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import gradio as gr

from webapp.server.api_input import LOG, TrailingInputs
from webapp.server.routes import ClosedRoutes
from webapp.server.size_limit import MAX_REQUEST_BYTES, RequestSizeLimit
from webapp.server.stalled import STALL_S, stalled_stream_lifespan

STATIC_SITE = Path(__file__).resolve().parents[1] / "web" / "dist"  # built by `make web`
STATIC_URL = f"/gradio_api/file={STATIC_SITE}/"
# Gradio keeps each session's last inputs (a copy of the prompt box) for this many sessions; its
# default, 10,000, lets hostile requests grow the server by hundreds of MB (docs/reliability.md).
# Nothing here needs them.
SESSION_CAPACITY = 100


def static_site_built() -> bool:
    return (STATIC_SITE / "index.html").is_file()


def allowed_files(model_path: Path) -> list[str]:
    """The model's loss curve and the built static page: not the rest of the model's folder,
    which may hold anything."""
    loss_curve = model_path.with_suffix(".loss.png")
    allowed = [str(loss_curve)] if loss_curve.is_file() else []
    if static_site_built():
        allowed.append(str(STATIC_SITE))
    return allowed


def log_refusals() -> None:
    """Refused requests, one line each, beside Gradio's own output."""
    if not LOG.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s chargpt: %(message)s"))
        LOG.addHandler(handler)
        LOG.setLevel(logging.INFO)
        LOG.propagate = False


def settle_matplotlib() -> None:
    """Gradio asks matplotlib for its backend around every request (for plots), and the first
    ask imports pyplot, which made the first visitor wait most of a second longer than the next
    ones. Ask once before serving (where it is installed)."""
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.get_backend()


def launch(
    demo: gr.Blocks, model_path: Path, host: str | None = None, port: int | None = None, share: bool = False, **kwargs
):
    """Serve: 127.0.0.1 unless a host is given (or GRADIO_SERVER_NAME is set, as on Spaces). A
    stream nobody reads for CHARGPT_STALL_SECONDS (default STALL_S) is ended (stalled.py)."""
    stall_s = float(os.environ.get("CHARGPT_STALL_SECONDS", STALL_S))
    from starlette.middleware import Middleware

    log_refusals()
    settle_matplotlib()
    inputs = {fn.api_name: len(fn.inputs) for fn in demo.fns.values() if isinstance(fn.api_name, str)}
    by_index = {index: len(fn.inputs) for index, fn in demo.fns.items() if isinstance(fn.api_name, str)}
    return demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        allowed_paths=allowed_files(model_path),
        show_error=True,
        max_file_size=MAX_REQUEST_BYTES,
        app_kwargs={
            "middleware": [
                Middleware(ClosedRoutes),
                Middleware(RequestSizeLimit),
                Middleware(TrailingInputs, inputs=inputs, by_index=by_index),
            ],
            "lifespan": stalled_stream_lifespan(stall_s),
        },
        state_session_capacity=SESSION_CAPACITY,
        **kwargs,
    )

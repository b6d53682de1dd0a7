"""Gradio's temporary folder, one per server and removed when it stops (docs/reliability.md).
No Gradio import here: the folder must be chosen before Gradio is imported."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def private_temp_folder():
    """Gradio's temporary folder (GRADIO_TEMP_DIR) for this server alone, inside the one it would
    use, and removed when the server stops: Gradio copies there the files it serves (the loss
    curve), and kept them after the server had gone. Gradio reads it when it is imported and
    when a component is made, so both happen inside this."""
    before = os.environ.get("GRADIO_TEMP_DIR")
    parent = Path(before or Path(tempfile.gettempdir()) / "gradio")
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="chargpt-", dir=parent))
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if before is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = before

"""Writing files safely, without torch: every stage (training, export, benchmarks) uses these.

A file is written to a temporary name beside its target, fsynced and renamed over it, so that a
crash or a full disk leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


class OutputExists(ValueError):
    """An output path that already holds something the command would overwrite."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def temp_file(directory: Path, prefix: str, suffix: str) -> Path:
    """A new empty file in `directory`, with the permissions a plain new file would get
    (mkstemp's are private to the owner)."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=suffix)
    os.close(fd)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    return Path(tmp)


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), fsync it, then rename it over `path`. On any failure the old
    file is untouched and the temporary one is removed."""
    tmp = temp_file(path.parent, f".{path.name}.", ".tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n"))


def new_output_file(path: str | Path, flag: str) -> Path:
    """An output file checked before the work that fills it: its missing parent folders are
    created, and an existing file is refused (OutputExists): nothing is overwritten."""
    path = Path(path)
    if path.is_dir():
        raise OutputExists(f"{flag} {path} is a folder; give a file name.")
    if path.exists():
        raise OutputExists(f"{flag} {path} already exists; choose another file name (nothing was overwritten).")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path

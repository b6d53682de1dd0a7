"""Checkpoint directories: weights (safetensors), metadata (config.json), optimizer state.

Layout (DESIGN.md): `model.safetensors`, `config.json`, `optimizer.pt`. config.json records the
SHA-256 of the other files, so a truncated or altered file is refused before it is used.
Every file is written to a temporary name, flushed to disk and renamed into place, and
config.json goes last: a crash or a full disk while saving leaves the previous checkpoint
whole. Weights never go through pickle; optimizer.pt is read with `weights_only=True`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FORMAT = "chargpt-checkpoint/1"
WEIGHTS, CONFIG, OPTIMIZER = "model.safetensors", "config.json", "optimizer.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says which file and why."""


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


def state_dict_for_saving(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, one per storage: a tied weight is saved once, under its first name."""
    seen, out = set(), {}
    for name, t in model.state_dict().items():
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        out[name] = t.detach().cpu().contiguous()
    return out


def save(directory: Path, model: torch.nn.Module, meta: dict, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Write a checkpoint into `directory` (which must exist). `meta` becomes config.json."""
    directory = Path(directory)
    atomic_write(directory / WEIGHTS, lambda tmp: save_file(state_dict_for_saving(model), tmp))
    files = {WEIGHTS: file_sha256(directory / WEIGHTS)}
    if optimizer is not None:
        atomic_write(directory / OPTIMIZER, lambda tmp: torch.save(optimizer.state_dict(), tmp))
        files[OPTIMIZER] = file_sha256(directory / OPTIMIZER)
    write_json(directory / CONFIG, {"format": FORMAT, **meta, "files": files})


def read_meta(directory: Path) -> dict:
    """config.json of a checkpoint directory, checked for format; CheckpointError otherwise."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a directory; give the run directory that training wrote (it holds {CONFIG}).")
    path = directory / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{directory} holds no {CONFIG}, so it is not a chargpt checkpoint directory.")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is corrupt (not valid JSON: {e}); the checkpoint cannot be used.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(
            f"{path} has checkpoint format {found!r}, but this version of chargpt reads {FORMAT!r}; "
            "use the chargpt version that wrote it, or train again."
        )
    return meta


def verify_files(directory: Path, meta: dict, names) -> None:
    """Check the SHA-256 of each named file against config.json."""
    for name in names:
        path = Path(directory) / name
        expected = meta.get("files", {}).get(name)
        if expected is None:
            raise CheckpointError(f"{Path(directory) / CONFIG} records no checksum for {name}; the checkpoint is incomplete.")
        if not path.is_file():
            raise CheckpointError(f"{path} is missing; the checkpoint is incomplete.")
        if file_sha256(path) != expected:
            raise CheckpointError(
                f"{path} does not match the checksum in {CONFIG} (truncated or altered); it will not be loaded."
            )


def load_weights(directory: Path, meta: dict) -> dict[str, torch.Tensor]:
    verify_files(directory, meta, [WEIGHTS])
    try:
        return load_file(str(Path(directory) / WEIGHTS))
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise CheckpointError(f"{Path(directory) / WEIGHTS} cannot be read ({e}).") from None


def load_optimizer_state(directory: Path, meta: dict) -> dict:
    verify_files(directory, meta, [OPTIMIZER])
    return torch.load(Path(directory) / OPTIMIZER, map_location="cpu", weights_only=True)


def load_model_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Load `state` into `model`, accepting a tied weight saved once; CheckpointError on mismatch."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {name for name in missing if _is_tied(model, name, state)}
    missing = [m for m in missing if m not in tied]
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not fit the model in its config.json (missing {missing[:3]}, unexpected {unexpected[:3]})."
        )


def _is_tied(model: torch.nn.Module, name: str, state: dict) -> bool:
    params = dict(model.named_parameters(remove_duplicate=False))
    target = params.get(name)
    return target is not None and any(params.get(k) is target for k in state)

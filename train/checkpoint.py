"""Checkpoint directories: weights (safetensors), metadata (config.json), optimizer state.

Layout (docs/training.md, "The run directory"): `model.safetensors`, `config.json`,
`optimizer.pt`. config.json records the SHA-256 of the other files, so a truncated or altered
file is refused before it is used. Weights never go through pickle; optimizer.pt is read with
`weights_only=True`.

Saving is a small journal, so that a crash at any moment (SIGKILL, a full disk, a read-only
directory) leaves either the previous checkpoint or the new one, whole, never a mix:
  1. each file is written beside the old one as NAME.next (temporary name, fsync, rename);
  2. config.json.next, holding the new files' checksums, is written the same way: from this
     moment the new checkpoint is committed;
  3. the .next files are renamed over the old ones, config.json last.
A crash inside step 3 is rolled forward by the next read (`recover`); a crash before step 2
leaves only .next litter, which the next save clears.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .files import atomic_write, file_sha256, write_json
from .metrics import METRICS

FORMAT = "chargpt-checkpoint/1"
WEIGHTS, CONFIG, OPTIMIZER = "model.safetensors", "config.json", "optimizer.pt"
BEST_DIR = "best"  # a run's checkpoint of its lowest validation estimate
AVERAGE_DIR = "average"  # the mean of its late weights (TrainConfig.swa_start)
KEPT_DIRS = (BEST_DIR, AVERAGE_DIR)  # what a run keeps beside its final weights, as candidates to export
PENDING = ".next"  # suffix of a file written by a save that has not been moved into place yet


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says which file and why."""


def state_dict_for_saving(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, one per storage: a tied weight is saved once, under its first name."""
    seen, out = set(), {}
    for name, t in model.state_dict().items():
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        out[name] = t.detach().cpu().contiguous()
    return out


def save(
    directory: Path,
    model: torch.nn.Module | dict[str, torch.Tensor],
    meta: dict,
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Write a checkpoint into `directory` (which must exist): a model's weights, or tensors as
    state_dict_for_saving gives them. `meta` becomes config.json. OSError (a full disk, a
    read-only directory) leaves the previous checkpoint as it was."""
    directory = Path(directory)
    recover(directory, discard_uncommitted=True)
    tensors = model if isinstance(model, dict) else state_dict_for_saving(model)
    payloads = {WEIGHTS: lambda tmp: save_tensors(tensors, tmp)}
    if optimizer is not None:
        payloads[OPTIMIZER] = lambda tmp: torch.save(optimizer.state_dict(), tmp)
    files = {}
    for name, write in payloads.items():
        atomic_write(directory / (name + PENDING), write)
        files[name] = file_sha256(directory / (name + PENDING))
    write_json(directory / (CONFIG + PENDING), {"format": FORMAT, **meta, "files": files})  # the commit point
    recover(directory)


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors' save_file, with a failed write (a full disk) raised as the OSError it is."""
    try:
        save_file(tensors, path)
    except SafetensorError as e:
        code = re.search(r"os error (\d+)", str(e))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from None


def recover(directory: Path, discard_uncommitted: bool = False) -> None:
    """Finish a committed save (config.json.next exists: move its files into place, config.json
    last); with discard_uncommitted, also delete what an uncommitted save left behind."""
    committed = directory / (CONFIG + PENDING)
    if committed.is_file():
        for name in json.loads(committed.read_text(encoding="utf-8")).get("files", {}):
            if (directory / (name + PENDING)).is_file():  # absent: moved before the crash
                os.replace(directory / (name + PENDING), directory / name)
        os.replace(committed, directory / CONFIG)
        sync_directory(directory)
    if discard_uncommitted:  # only a save's own files: another writer may share the directory
        for name in (WEIGHTS, OPTIMIZER, CONFIG):
            for litter in [directory / (name + PENDING), *directory.glob(f".{name}{PENDING}.*.tmp")]:
                litter.unlink(missing_ok=True)


def sync_directory(directory: Path) -> None:
    """Make the renames in `directory` durable (a power cut after a save keeps it)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def peek_step(directory: Path) -> int | None:
    """The step of the checkpoint config.json describes right now, or None: a plain read that,
    unlike read_meta, never finishes a pending save, so it is safe beside a running trainer
    (read_meta's recovery would move files under a save in progress)."""
    try:
        return json.loads((Path(directory) / CONFIG).read_text(encoding="utf-8"))["step"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_meta(directory: Path) -> dict:
    """config.json of a checkpoint directory, checked for format; CheckpointError otherwise."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(
            f"{directory} is not a directory; give the run directory that training wrote (it holds {CONFIG})."
        )
    try:
        recover(directory)  # a save that was committed but not finished when the run was killed
    except OSError as e:
        raise CheckpointError(
            f"{directory} holds a save that was cut short, and finishing it failed ({e.strerror or e}); "
            "make the directory writable, then try again."
        ) from None
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
            raise CheckpointError(
                f"{Path(directory) / CONFIG} records no checksum for {name}; the checkpoint is incomplete."
            )
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


def load_model(directory: Path, meta: dict | None = None):
    """The GPTLanguageModel saved in `directory` (a run or its best/), weights checked against
    config.json, in eval mode on the CPU: the one way a checkpoint becomes a model."""
    meta = read_meta(directory) if meta is None else meta
    return model_from_weights(meta, load_weights(directory, meta), Path(directory))


def model_from_weights(meta: dict, state: dict[str, torch.Tensor], source: Path):
    """The GPTLanguageModel that `meta` describes, holding `state` (weights read from `source`,
    or computed from them), in eval mode."""
    from .model import GPTConfig, GPTLanguageModel

    model = GPTLanguageModel(GPTConfig.from_dict(meta["model"]))
    load_model_weights(model, state, source)
    return model.eval()


def _is_tied(model: torch.nn.Module, name: str, state: dict) -> bool:
    params = dict(model.named_parameters(remove_duplicate=False))
    target = params.get(name)
    return target is not None and any(params.get(k) is target for k in state)


def lower_loss_checkpoint(losses: dict[Path, float]) -> Path:
    """The checkpoint of a finished run to export, from its candidates' whole-split validation
    losses (the final weights first, then best/ and average/ where the run has them): the lowest,
    the first of equals. best/ holds the lowest *estimate*, which is noisy, so it is not always
    the better one (docs/training.md)."""
    return min(losses, key=losses.__getitem__)


def add_to_mean(mean: dict[str, torch.Tensor], count: int, new: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The mean of count + 1 weight sets (an average/ checkpoint's), from the mean of the first
    count and the next one."""
    return {name: mean[name] + (new[name] - mean[name]) / (count + 1) for name in new}


def run_metrics(directory: Path) -> Path | None:
    """The metrics.jsonl of the run a checkpoint belongs to: its own, or for a run's best/ or
    average/ the run's; None when there is none."""
    directory = Path(directory)
    runs = [directory, directory.parent] if directory.name in KEPT_DIRS else [directory]
    return next((d / METRICS for d in runs if (d / METRICS).is_file()), None)


def export_reason(run_dir: Path, chosen: Path) -> str:
    if chosen != run_dir:
        return f"{chosen.name}/ has the lowest whole-split validation loss"
    if any((run_dir / name).is_dir() for name in KEPT_DIRS):
        return "the final weights have the lowest whole-split validation loss"
    return "the final weights"

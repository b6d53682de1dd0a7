"""`python -m train`: the command line. Parses flags, checks every input, then hands over to
the Trainer. Each problem a user can fix is one sentence on stderr and exit code 2."""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

from .config import MODEL_FIELDS, PRESETS, TRAIN_FIELDS, TrainConfig, split_settings
from .usage import fail

DEFAULT_PRESET = "seed-0.2m"
WRITE_ERROR = 1  # the run could not be written (disk full, read-only); its last checkpoint is intact

# Flags that tune a run; each overrides the preset's value. The first group are the lecture's names.
HYPERPARAMETERS = {
    "batch_size": (int, "sequences per step (per process under torchrun)"),
    "block_size": (int, "context length in characters"),
    "max_iters": (int, "optimizer steps"),
    "eval_interval": (int, "steps between evaluations and checkpoints"),
    "learning_rate": (float, "peak AdamW learning rate"),
    "eval_iters": (int, "random batches per split in each evaluation"),
    "n_embd": (int, "embedding width"),
    "n_head": (int, "attention heads"),
    "n_layer": (int, "transformer blocks"),
    "dropout": (float, "dropout probability"),
    "dropout_min_passes": (
        float,
        "dropout only when the run passes over the training text at least this many times (0 = always)",
    ),
    "high_dropout_passes": (
        float,
        "train with --high-dropout instead when the run passes over its training text at least "
        "this many times (0 = never)",
    ),
    "high_dropout": (float, "the dropout of a run that passes over its text at least --high-dropout-passes times"),
    "lr_schedule": (str, "constant or cosine"),
    "warmup_iters": (int, "linear warmup steps"),
    "min_lr_ratio": (float, "cosine floor as a fraction of the learning rate"),
    "weight_decay": (float, "weight decay: AdamW's, and Muon's decoupled decay of the blocks' matrices"),
    "beta1": (float, "AdamW beta1"),
    "beta2": (float, "AdamW beta2"),
    "grad_clip": (float, "max gradient norm (0 = off)"),
    "optimizer": (str, "adamw, or muon (Muon for the blocks' matrices, AdamW for the rest)"),
    "muon_lr": (float, "peak Muon learning rate (follows the same schedule)"),
    "muon_momentum": (float, "Muon's Nesterov momentum"),
    "swa_start": (
        float,
        "average the weights of each evaluation from this fraction of the run on, and the final "
        "ones, into the run's average/ checkpoint (SWA; 1 = off)",
    ),
    "position": (str, "learned or rotary"),
    "activation": (str, "relu, gelu, relu2 or swiglu"),
    "norm": (str, "layernorm or rmsnorm"),
    "mlp_ratio": (int, "MLP hidden width as a multiple of n_embd"),
}
SWITCHES = {
    "bias": "biases in linear layers and norms (the lecture's default)",
    "tie_weights": "share the token embedding with the output head",
    "qk_norm": "normalise queries and keys",
    "zero_init_proj": "zero-initialise each residual branch's output projection",
    "attention_dropout": "apply dropout to attention weights too (the lecture's default)",
}
# Flags that may accompany --resume: they change where and how fast, not what is trained, except
# --max-iters, which extends the run (the schedule is then the one of a run of the new length).
RESUME_FLAGS = {"device", "compile", "data", "max_iters"}


class UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train",
        description="Train a character-level GPT on a UTF-8 text file (default: Tiny Shakespeare).",
        epilog=f"presets: {', '.join(f'{k}' for k in PRESETS)}. Flags override the preset. "
        "Several processes: torchrun --nproc_per_node N -m train --out DIR ...",
    )
    p.add_argument("--preset", choices=sorted(PRESETS), help=f"named settings (default {DEFAULT_PRESET})")
    p.add_argument("--data", help="UTF-8 text file to train on (default: Tiny Shakespeare, cached or downloaded)")
    p.add_argument("--out", help="new run directory (default runs/PRESET-TIME)")
    p.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the run saved in DIR with its own settings; with --max-iters N, "
        "extend it to N steps (the learning-rate schedule becomes that of an N-step run: unchanged when "
        "constant, a cosine rises again from the step reached and decays to its floor at N)",
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto picks CUDA when present")
    p.add_argument("--seed", type=int, help="random seed (default 1337)")
    p.add_argument(
        "--time-budget", type=float, metavar="MINUTES", help="fit the run (and its schedule) to this many minutes"
    )
    p.add_argument(
        "--compile",
        nargs="?",
        const="inductor",
        metavar="BACKEND",
        help="torch.compile the model (BACKEND: inductor, the default; aot_eager compiles in seconds, "
        "to check a setup)",
    )
    for name, (kind, text) in HYPERPARAMETERS.items():
        p.add_argument("--" + name.replace("_", "-"), type=kind, help=text)
    for name, text in SWITCHES.items():
        p.add_argument("--" + name.replace("_", "-"), action=argparse.BooleanOptionalAction, help=text)
    return p


def settings_from_args(args: argparse.Namespace) -> dict:
    """The preset's settings with every given flag laid over them."""
    settings = dict(PRESETS[args.preset or DEFAULT_PRESET])
    for name in MODEL_FIELDS | TRAIN_FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            settings[name] = value
    return settings


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but PyTorch sees no CUDA GPU here; use --device cpu or auto.")
    return torch.device(name)


def prepare_out_dir(out: str | None, preset: str) -> Path:
    given = out is not None
    if not given:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UsageError("under torchrun every process must write to the same place: give --out DIR.")
        out = f"runs/{preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} is a file, not a directory; choose another --out.")
    if path.is_dir() and any(path.iterdir()):
        if (path / "config.json").exists():
            raise UsageError(f"{path} already holds a run; continue it with --resume {path}, or choose another --out.")
        raise UsageError(f"{path} is not empty; choose a new or empty directory for --out.")
    return path  # created with its missing parents once every input has been checked


def extended(cfg: TrainConfig, max_iters: int, done: int, run_dir: Path) -> TrainConfig:
    """The settings of a run continued to `max_iters` steps in all. A time budget no longer
    applies (the new length is the user's); the schedule is lr_at's for the new max_iters."""
    if max_iters <= done:
        raise UsageError(f"--max-iters {max_iters} must be above the {done} steps the run in {run_dir} has done.")
    return replace(cfg, max_iters=max_iters, time_budget=None)


def plan_run(args: argparse.Namespace):
    """Everything the Trainer needs, checked: (model config, train config, corpus, run dir, resume meta)."""
    from . import checkpoint
    from .data import load_corpus, load_run_corpus
    from .model import GPTConfig

    if args.resume is not None:
        given = [k for k, v in vars(args).items() if k not in RESUME_FLAGS | {"resume"} and v not in (None, False)]
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise UsageError(f"--resume continues a run with its saved settings; drop {flags}.")
        run_dir = Path(args.resume)
        meta = checkpoint.read_meta(run_dir)
        checkpoint.verify_files(run_dir, meta, [checkpoint.WEIGHTS, checkpoint.OPTIMIZER])
        model_cfg = GPTConfig.from_dict(meta["model"])
        cfg = TrainConfig(**meta["train"])
        if args.max_iters is not None:
            cfg = extended(cfg, args.max_iters, meta["step"], run_dir)
        elif meta["step"] >= cfg.max_iters and "val_loss_full" in meta:  # finished, final evaluation included
            raise UsageError(
                f"the run in {run_dir} is already complete ({meta['step']} of {cfg.max_iters} steps); "
                f"to train it further, give the new total: --resume {run_dir} --max-iters N."
            )
        corpus = load_run_corpus(meta, args.data)
        return model_cfg, cfg, corpus, run_dir, meta
    model_fields, train_fields = split_settings(settings_from_args(args))
    if args.max_iters is not None and args.time_budget is None:
        train_fields["time_budget"] = (
            None  # a step count given on the command line is the run's length, not a preset's budget
        )
    cfg = TrainConfig(**train_fields)
    corpus = load_corpus(args.data)
    model_cfg = GPTConfig(vocab_size=corpus.tokenizer.vocab_size, **model_fields)
    return model_cfg, cfg, corpus, prepare_out_dir(args.out, args.preset or DEFAULT_PRESET), None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # bad flags: argparse prints usage and exits 2
    from .checkpoint import CheckpointError
    from .data import DataError
    from .trainer import Trainer

    try:
        device = resolve_device(args.device)
        model_cfg, cfg, corpus, run_dir, meta = plan_run(args)
        trainer = Trainer(model_cfg, cfg, corpus, run_dir, device, args.compile, meta)
        if trainer.job.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)  # only now that every input has been checked
    except (UsageError, DataError, CheckpointError, ValueError) as e:
        return fail("python -m train", str(e))
    try:
        return trainer.run()
    except OSError as e:  # a full disk or a read-only directory while writing the run
        return fail(
            "python -m train",
            f"writing to {run_dir} failed ({e.strerror or e}); {last_checkpoint(run_dir)}",
            WRITE_ERROR,
        )


def last_checkpoint(run_dir: Path) -> str:
    """What is left to resume from after a failed write, in words."""
    from . import checkpoint

    try:
        step = checkpoint.read_meta(run_dir)["step"]
    except (checkpoint.CheckpointError, KeyError):
        return "it holds no checkpoint yet; start the run again once the problem is fixed."
    return (
        f"the checkpoint of step {step} there is intact: fix the problem (free space, write access), "
        f"then continue with python -m train --resume {run_dir}"
    )

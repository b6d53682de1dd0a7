"""The training loop: AdamW, or Muon for the blocks' matrices and AdamW for the rest, optional
warmup + cosine, clipping, evaluation, checkpoints.

Reproducibility: every random draw of step s (its batch, its dropout masks) comes from a seed
derived from (seed, s, rank), not from a generator carried through the run. A checkpoint is
then just weights + optimizer state + step, and a resumed run continues exactly as an
uninterrupted one would have (bit for bit on CPU).
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn import functional as F
from tqdm import tqdm

from . import checkpoint
from .checkpoint import AVERAGE_DIR, BEST_DIR, KEPT_DIRS, add_to_mean, lower_loss_checkpoint
from .config import TrainConfig, lr_at, passes, run_dropout
from .data import check_long_enough, get_batch, resolve_data_path, split_ids
from .files import write_json
from .flops import measure_matmul_peak, train_flops_per_char
from .metrics import METRICS, append_metrics, read_metrics, rewrite_metrics
from .model import GPTConfig, GPTLanguageModel, model_size_mb
from .optim import build_optimizers
from .plot import plot_losses
from .text import CharTokenizer, DataError, eval_batches, read_text

SAMPLE, LOSS_PNG = "sample.txt", "loss.png"
LOG_EVERY = 10  # steps between train-loss lines in metrics.jsonl
SAMPLE_CHARS = 500
FINISH_OVERHEAD_S = 3.0  # final checkpoint, sample file, loss plot (matplotlib's import)
SAMPLE_CALL_S = 0.003  # fixed cost of one forward call of the sample (layers, Python)
INTERRUPTED_EXIT = 130
REFITS = 10  # a time budget's run refits its length at least this often (and after each evaluation)
# How long the matmul peak is timed at start: 2 s unless CHARGPT_PEAK_SECONDS says otherwise
# (the tests' runs of a few seconds time it for a tenth of a second).
PEAK_SECONDS_ENV, PEAK_SECONDS = "CHARGPT_PEAK_SECONDS", 2.0


def peak_seconds() -> float:
    """PEAK_SECONDS, or the number CHARGPT_PEAK_SECONDS holds (a malformed one is ignored)."""
    try:
        return max(0.0, float(os.environ.get(PEAK_SECONDS_ENV, PEAK_SECONDS)))
    except ValueError:
        return PEAK_SECONDS


@dataclass
class Corpus:
    path: str
    sha256: str
    tokenizer: CharTokenizer
    train: torch.Tensor  # int64 ids
    val: torch.Tensor


def load_corpus(data_path: str | None) -> Corpus:
    path = resolve_data_path(data_path)
    text, sha = read_text(path)
    tokenizer = CharTokenizer.from_text(text)
    train, val = split_ids(torch.tensor(tokenizer.encode(text), dtype=torch.long))
    return Corpus(str(path), sha, tokenizer, train, val)


def load_run_corpus(meta: dict, data_path: str | None = None) -> Corpus:
    """The text a run trained on: data_path, or else the path the run recorded; DataError when
    the file is not that text (its SHA-256 differs)."""
    corpus = load_corpus(data_path or meta["dataset"]["path"])
    if corpus.sha256 != meta["dataset"]["sha256"]:
        raise DataError(
            f"{corpus.path} is not the text this run was trained on (SHA-256 differs); pass the original with --data."
        )
    return corpus


@dataclass
class Dist:
    """Where this process stands in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    size: int = 1  # processes in the job (torchrun's WORLD_SIZE)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return Dist()
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), size)


def step_seed(seed: int, step: int, rank: int, stream: int = 0) -> int:
    """A distinct seed for each (run seed, step, rank, stream): stream 0 trains, 1 evaluates."""
    return ((seed * 1_000_003 + step) * 1024 + rank) * 2 + stream


def autocast_for(device: torch.device):
    # bf16 only where it is fast; CPUs here run bf16 matmuls hundreds of times slower.
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def estimate_loss(model, corpus: Corpus, cfg: TrainConfig, block_size: int, step: int, job: Dist, device) -> dict:
    """The lecture's progress estimate: mean loss over eval_iters random batches per split."""
    model.eval()
    out = {}
    g = torch.Generator().manual_seed(step_seed(cfg.seed, step, job.rank, stream=1))  # never the training draws
    for split, data in (("train", corpus.train), ("val", corpus.val)):
        losses = torch.zeros(cfg.eval_iters)
        for k in range(cfg.eval_iters):
            x, y = get_batch(data, cfg.batch_size, block_size, g)
            with autocast_for(device):
                _, loss, _ = model(x.to(device), y.to(device))
            losses[k] = loss.item()
        mean = losses.mean()
        if job.size > 1:
            dist.all_reduce(mean)
            mean /= job.size
        out[split] = mean.item()
    model.train()
    return out


@torch.no_grad()
def split_char_losses(model: GPTLanguageModel, data: torch.Tensor, block_size: int, device, batch_size: int = 64):
    """Cross-entropy of every next-character prediction in `data`, read in consecutive block_size
    windows (the reported loss's reading: docs/training.md): yields [windows, length] tensors, column j the predictions
    from j + 1 characters of context. The model is in eval mode while it runs."""
    was_training = model.training
    model.eval()
    try:
        for starts, length in eval_batches(len(data), block_size, batch_size):
            positions = torch.tensor(starts)[:, None] + torch.arange(length)
            x, y = data[positions].to(device), data[positions + 1].to(device)
            logits, _, _ = model(x)
            yield F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none")
    finally:
        model.train(was_training)


def full_split_loss(
    model: GPTLanguageModel, data: torch.Tensor, block_size: int, device, batch_size: int = 64
) -> float:
    """Mean cross-entropy (nats/char) over the whole split, in consecutive block_size windows
    (the reported validation loss: docs/training.md): deterministic and independent of batch size."""
    total, count = 0.0, 0
    for losses in split_char_losses(model, data, block_size, device, batch_size):
        total += losses.double().sum().item()
        count += losses.numel()
    return total / count


def refit_due(step: int, last_fit: int, max_iters: int, eval_interval: int) -> bool:
    """Whether a time budget's run refits its length after `step` steps: after each periodic
    evaluation (which also measures the evaluation's cost), and every tenth of the run between
    them, so a run shorter than one eval_interval still corrects a first fit made while the
    machine was busier or quieter. Steps, not seconds, so that every DDP rank agrees."""
    if step >= max_iters:
        return False
    after_periodic_eval = (step - 1) % eval_interval == 0
    return after_periodic_eval or step - last_fit >= max(1, max_iters // REFITS)


def eval_seconds(eval_s: float, step_s: float, eval_iters: int) -> float:
    """The last evaluation's cost, at most a third of what its 2 * eval_iters batches cost as
    training steps at `step_s`: a forward without gradients does a third of a step's FLOPs (2 of
    6 per weight) and none of its optimizer's work, so a larger figure was measured while the
    machine was busier (a busy start times only the evaluation at step 0)."""
    return min(eval_s, 2 * eval_iters * step_s / 3)


def fit_max_iters(
    budget_s: float, elapsed_s: float, step: int, step_s: float, eval_s: float, cfg: TrainConfig, final_s: float
) -> int:
    """How many steps fit in what is left of the time budget, counting the periodic evaluations,
    the one before the last step, and the final phase (final_s)."""
    per_step = step_s + eval_s / cfg.eval_interval
    remaining = budget_s - elapsed_s - final_s - eval_s
    return max(step + 1, step + int(remaining / per_step))


class StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it between steps and saves before leaving."""

    def __init__(self):
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handler)

    def _handler(self, signum, frame):
        self.requested = True


def trim_metrics(run_dir: Path, step: int, last_eval: int | None) -> None:
    """Keep the metric lines that the checkpoint being resumed (at `step`) had behind it: a
    killed run may have written lines past it, and those steps are about to be redone. An
    evaluation at `step` itself counts only if the checkpoint recorded it; a final record
    never does (a resumed run has not finished)."""
    path = run_dir / METRICS
    if not path.exists():
        return
    records = read_metrics(path)

    def behind_checkpoint(r: dict) -> bool:
        at = r.get("step", 0)
        if r.get("kind") == "final" or at > step:
            return False
        return at < step or r.get("kind") != "eval" or last_eval == step

    rewrite_metrics(path, [r for r in records if behind_checkpoint(r)])


class Trainer:
    """One training run into `run_dir`, fresh or resumed from the checkpoint there."""

    def __init__(
        self,
        model_cfg: GPTConfig,
        cfg: TrainConfig,
        corpus: Corpus,
        run_dir: Path,
        device: torch.device,
        compile_model: str | None = None,
        resume_meta: dict | None = None,
    ):
        check_long_enough(corpus.train, corpus.val, model_cfg.block_size)
        self.job = init_distributed(device)
        if self.job.size > 1 and device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        self.model_cfg, self.cfg, self.corpus, self.run_dir, self.device = model_cfg, cfg, corpus, run_dir, device
        torch.manual_seed(cfg.seed)  # the initial weights
        self.model = GPTLanguageModel(model_cfg).to(device)
        self.optimizer = build_optimizers(self.model, cfg)
        # What a checkpoint carries besides weights and optimizer (all JSON).
        self.state = {
            "step": 0,
            "tokens_seen": 0,
            "elapsed_s": 0.0,
            "best_val": None,
            "last_eval": None,
            "losses": None,
            "max_iters_fitted": False,
            "reserve_s": 0.0,
            "dropout_settled": False,
        }
        if resume_meta is not None:
            checkpoint.load_model_weights(self.model, checkpoint.load_weights(run_dir, resume_meta), run_dir)
            self.optimizer.load_state_dict(checkpoint.load_optimizer_state(run_dir, resume_meta))
            self.state.update({k: resume_meta[k] for k in self.state if k in resume_meta})
        # The model as the training steps call it: compiled and/or wrapped for DDP (self.model
        # stays the plain module whose weights are saved).
        self.step_model = torch.compile(self.model, backend=compile_model) if compile_model else self.model
        if self.job.size > 1:
            ids = [device.index] if device.type == "cuda" else None
            self.step_model = torch.nn.parallel.DistributedDataParallel(self.step_model, device_ids=ids)
        self.tokens_per_step = cfg.batch_size * model_cfg.block_size * self.job.size
        self.clock_start = time.perf_counter() - self.state["elapsed_s"]
        # The hardware's float32 matmul rate, measured now in this process (same threads, same
        # load), against which the training rate is reported; every process has its own.
        seconds = peak_seconds()  # a short timing takes smaller products, so that it stays short
        self.peak_flops = measure_matmul_peak(device, seconds, size=2048 if seconds >= 1 else 512) * self.job.size
        self.flops_per_char = train_flops_per_char(model_cfg)
        self.train_time, self.timed_steps = 0.0, 0
        self.resumed = resume_meta is not None

    # -- helpers ---------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.perf_counter() - self.clock_start

    def chars_per_s(self) -> float:
        return self.tokens_per_step * self.timed_steps / self.train_time if self.train_time else 0.0

    def utilisation(self) -> float:
        """Model FLOP/s of the training steps as a fraction of the measured matmul peak."""
        return self.chars_per_s() * self.flops_per_char / self.peak_flops

    def say(self, line: str) -> None:
        if self.job.is_main:
            tqdm.write(line)

    def meta(self, **extra) -> dict:
        c = self.corpus
        return {
            "model": self.model_cfg.to_dict(),
            "vocab": list(c.tokenizer.chars),
            "train": self.cfg.to_dict(),
            "dataset": {"path": c.path, "sha256": c.sha256, "train_chars": len(c.train), "val_chars": len(c.val)},
            **self.state,
            "elapsed_s": round(self.elapsed(), 3),
            **extra,
        }

    def save(self, **extra) -> None:
        if self.job.is_main:
            checkpoint.save(self.run_dir, self.model, self.meta(**extra), self.optimizer)

    def agree(self, *flags: bool) -> list[bool]:
        """Each flag, True on every rank when it is True on any (signals reach ranks at different steps)."""
        if self.job.size == 1:
            return list(flags)
        t = torch.tensor([float(f) for f in flags], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> int:
        """Train to max_iters (or the time budget); returns the exit code: 0, or 130 when
        interrupted by a signal after saving a checkpoint to resume from."""
        step, stop = self.begin()
        while step < self.cfg.max_iters:
            interrupted, time_up = self.agree(stop.requested, self.out_of_time())
            if interrupted:
                return self.interrupt(step)
            if time_up:
                self.stop_after(step)
            if self.evaluation_due(step):
                self.evaluate(step)
            loss = self.train_step(step)
            step = self.state["step"] = step + 1
            if self.fit_due(step):
                self.fit_to_budget(self.budget_s)  # first after 20 steps, then as refit_due says
            self.report(step, loss)
        return self.end(step)

    def begin(self) -> tuple[int, StopFlag]:
        """Before the first step: a checkpoint to resume from, the signal handlers, the time
        budget's plan, dropout and the progress bar. Returns the step to start from."""
        cfg, step = self.cfg, self.state["step"]
        self.say(f"{self.model.num_params() / 1e6} M parameters")
        if self.resumed:
            self.say(f"resuming {self.run_dir} at step {step} of {cfg.max_iters}")
            if self.job.is_main:
                trim_metrics(self.run_dir, step, self.state["last_eval"])
        else:
            self.save()  # a checkpoint from the first moment: a run killed at any time can be resumed
        stop = StopFlag()
        self.last_fit = step  # the step of the last fit to the time budget (a resumed run's own start)
        self.budget_s = cfg.time_budget * 60 if cfg.time_budget else None
        self.calibrate_at = step + 20 if self.budget_s and not self.state["max_iters_fitted"] else None
        if self.calibrate_at is None or self.calibrate_at >= cfg.max_iters:
            self.settle_dropout()
        elif cfg.dropout_min_passes and not self.state["dropout_settled"]:
            # A time budget's run knows its length only at the first fit: no dropout until then.
            self.model.set_dropout(0.0)
        disable = None if self.job.is_main else True  # None: a bar on terminals only
        self.bar = tqdm(total=cfg.max_iters, initial=step, unit="step", dynamic_ncols=True, disable=disable)
        self.model.train()
        return step, stop

    def out_of_time(self) -> bool:
        return self.budget_s is not None and self.elapsed() > self.budget_s - self.state["reserve_s"]

    def stop_after(self, step: int) -> None:
        """The time budget is spent: one last evaluated step, then finish."""
        if self.cfg.max_iters > step + 1:
            self.cfg = replace(self.cfg, max_iters=step + 1)
            self.say(f"time budget of {self.cfg.time_budget:g} min reached at step {step}")

    def evaluation_due(self, step: int) -> bool:
        due = step % self.cfg.eval_interval == 0 or step == self.cfg.max_iters - 1
        return due and self.state["last_eval"] != step

    def fit_due(self, step: int) -> bool:
        """Whether to fit max_iters to the time budget now: after the first 20 steps, then as
        refit_due says."""
        if step == self.calibrate_at:
            return True
        fitted = self.budget_s and self.state["max_iters_fitted"]
        return bool(fitted and refit_due(step, self.last_fit, self.cfg.max_iters, self.cfg.eval_interval))

    def interrupt(self, step: int) -> int:
        """A signal asked the run to stop: save where it is, say how to continue."""
        self.save()
        self.bar.close()
        resume = f"python -m train --resume {self.run_dir}"
        self.say(f"interrupted at step {step}; saved to {self.run_dir}. Continue with: {resume}")
        self._shutdown()
        return INTERRUPTED_EXIT

    def end(self, step: int) -> int:
        """After the last step: the last weights into the average, a checkpoint, and the report."""
        self.bar.close()
        if self.job.is_main and self.averaging(step):
            self.add_to_average(step)
        self.save()
        if self.job.size > 1:
            self.say(
                f"ranks in sync: {self.job.size} processes, "
                f"{ranks_out_of_sync(self.model, self.device)} parameter tensors differ from rank 0"
            )
        if self.job.is_main:
            self.finish()
        self._shutdown()
        return 0

    def train_step(self, step: int) -> torch.Tensor:
        t0 = time.perf_counter()
        self.optimizer.set_lr(lr_at(step, self.cfg))
        seed = step_seed(self.cfg.seed, step, self.job.rank)
        torch.manual_seed(seed)  # this step's dropout masks
        x, y = get_batch(
            self.corpus.train, self.cfg.batch_size, self.model_cfg.block_size, torch.Generator().manual_seed(seed)
        )
        with autocast_for(self.device):
            _, loss, _ = self.step_model(x.to(self.device), y.to(self.device))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.state["tokens_seen"] += self.tokens_per_step
        if step > 3:  # the first steps warm up allocators and kernels
            self.train_time += time.perf_counter() - t0
            self.timed_steps += 1
        return loss.detach()

    def evaluate(self, step: int) -> None:
        t0 = time.perf_counter()
        losses = estimate_loss(
            self.step_model, self.corpus, self.cfg, self.model_cfg.block_size, step, self.job, self.device
        )
        self.eval_s = time.perf_counter() - t0
        self.state.update(last_eval=step, losses=losses)
        self.say(f"step {step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        if self.job.is_main:
            append_metrics(
                self.run_dir,
                {
                    "kind": "eval",
                    "step": step,
                    "train_loss": losses["train"],
                    "val_loss": losses["val"],
                    "lr": lr_at(step, self.cfg),
                    "tokens": self.state["tokens_seen"],
                    "elapsed_s": round(self.elapsed(), 3),
                },
            )
            if self.state["best_val"] is None or losses["val"] < self.state["best_val"]:
                self.state["best_val"] = losses["val"]
                (self.run_dir / BEST_DIR).mkdir(exist_ok=True)
                checkpoint.save(self.run_dir / BEST_DIR, self.model, self.meta())
            if step % self.cfg.eval_interval == 0 and self.averaging(step):
                self.add_to_average(step)
        self.save()

    def averaging(self, step: int) -> bool:
        """Whether the weights at `step` go into the run's average (TrainConfig.swa_start)."""
        return self.cfg.swa_start < 1 and step >= self.cfg.swa_start * self.cfg.max_iters

    def add_to_average(self, step: int) -> None:
        """Fold the current weights into average/, the mean of the weights at each evaluation
        from swa_start on and of the final ones. It lives on disk only, with the steps it holds,
        so a resumed run that redoes a step does not count it twice; it starts again when it
        holds steps that are no longer in the run's last stretch (a run extended with
        --max-iters, or a time budget's run found longer than first fitted)."""
        directory = self.run_dir / AVERAGE_DIR
        weights, steps = checkpoint.state_dict_for_saving(self.model), []
        if (directory / checkpoint.CONFIG).exists():
            meta = checkpoint.read_meta(directory)
            if all(self.averaging(s) for s in meta["averaged_steps"]):
                steps = meta["averaged_steps"]
                if step in steps:
                    return
                weights = add_to_mean(checkpoint.load_weights(directory, meta), len(steps), weights)
        directory.mkdir(exist_ok=True)
        checkpoint.save(directory, weights, self.meta(averaged_steps=[*steps, step]))

    def fit_to_budget(self, budget_s: float) -> None:
        """Replace max_iters by the number of steps that fit the time budget, measured on the
        steps so far; the learning-rate schedule then spans the budget. Refitted as it goes
        (refit_due), so a machine that gets busier or quieter still ends on time and in full."""
        step_s = self.train_time / max(1, self.timed_steps)
        eval_s = eval_seconds(getattr(self, "eval_s", 0.0), step_s, self.cfg.eval_iters)
        # What finish() costs, kept out of the loop's time: the whole-split evaluation (the
        # validation split in batches like the evaluation's), the sample (one forward per
        # character), saving and plotting. Overestimated rather than under: batch-1 forwards are cheaper.
        forward_s = eval_s / (2 * self.cfg.eval_iters)
        val_batches = len(self.corpus.val) / (self.cfg.batch_size * self.model_cfg.block_size)
        # The split once for each of the final weights, best/ and average/; a sample character is
        # one forward of a single sequence: a batch's cost over batch_size, plus a fixed per-call cost.
        sample_s = SAMPLE_CHARS * (forward_s / self.cfg.batch_size + SAMPLE_CALL_S)
        splits = 3 if self.cfg.swa_start < 1 else 2
        self.state["reserve_s"] = forward_s * splits * val_batches + sample_s + FINISH_OVERHEAD_S
        fitted = fit_max_iters(
            budget_s, self.elapsed(), self.state["step"], step_s, eval_s, self.cfg, self.state["reserve_s"]
        )
        if self.job.size > 1:
            t = torch.tensor([fitted], device=self.device)
            dist.broadcast(t, src=0)
            fitted = int(t.item())
        if not self.state["max_iters_fitted"]:
            self.say(f"time budget {self.cfg.time_budget:g} min: training for about {fitted} steps")
        self.cfg = replace(self.cfg, max_iters=fitted)
        self.state["max_iters_fitted"] = True
        self.last_fit = self.state["step"]
        self.bar.total = fitted
        self.settle_dropout()

    def settle_dropout(self) -> None:
        """Once the run's length is known, keep its dropout, turn it off (dropout_min_passes) or
        raise it (high_dropout_passes); decided once, so refits and resumed runs keep it, and the
        checkpoint's config records it."""
        if self.state["dropout_settled"]:
            return
        self.state["dropout_settled"] = True
        cfg, configured = self.cfg, self.model_cfg.dropout
        if not (configured and (cfg.dropout_min_passes or cfg.high_dropout_passes)):
            return
        run_passes = passes(cfg.max_iters, self.tokens_per_step, len(self.corpus.train))
        dropout, why = run_dropout(
            configured, run_passes, cfg.dropout_min_passes, cfg.high_dropout, cfg.high_dropout_passes
        )
        self.model_cfg = replace(self.model_cfg, dropout=dropout)
        self.model.set_dropout(dropout)
        self.say(f"dropout {dropout:g}: the run passes over its training text {run_passes:.1f} times ({why})")

    def report(self, step: int, loss: torch.Tensor) -> None:
        if not self.job.is_main:
            return
        self.bar.update(1)
        if step % LOG_EVERY == 0 or step == self.cfg.max_iters:
            value = loss.item()
            self.bar.set_postfix(
                loss=f"{value:.4f}", char_s=f"{self.chars_per_s():,.0f}", peak=f"{self.utilisation():.0%}"
            )
            append_metrics(
                self.run_dir,
                {
                    "kind": "train",
                    "step": step,
                    "loss": value,
                    "lr": lr_at(step - 1, self.cfg),
                    "chars_per_s": round(self.chars_per_s(), 1),
                    "peak_fraction": round(self.utilisation(), 4),
                    "elapsed_s": round(self.elapsed(), 3),
                },
            )

    def finish(self) -> None:
        """Whole-split validation loss, model size, a sample, the loss curve, the final checkpoint."""
        model, corpus, run_dir = self.model, self.corpus, self.run_dir
        val_full = full_split_loss(model, corpus.val, self.model_cfg.block_size, self.device)
        self.say(f"val loss (whole split, {len(corpus.val) - 1:,} characters): {val_full:.4f}")
        candidates = {run_dir: val_full}
        for directory in (run_dir / name for name in KEPT_DIRS):
            if (directory / checkpoint.CONFIG).exists():
                candidates[directory] = self.measure_kept(directory, val_full)
        to_export = lower_loss_checkpoint(candidates)
        self.say(f"to export: python -m export {to_export}   ({export_reason(run_dir, to_export)})")
        self.say(f"Model size: {model_size_mb(model):.2f} MB")
        self.say(
            f"trained {self.state['step']} steps, {self.state['tokens_seen']:,} characters in "
            f"{self.elapsed():.1f} s ({self.chars_per_s():,.0f} characters/s)"
        )
        self.say(
            f"matmul utilisation: {self.utilisation():.1%} of this machine's measured float32 peak "
            f"({self.peak_flops / 1e9:.1f} GFLOP/s; {self.flops_per_char / 1e6:.2f} MFLOP per trained character)"
        )
        newline = corpus.tokenizer.encode("\n") if "\n" in corpus.tokenizer.chars else [0]
        g = torch.Generator(device=self.device).manual_seed(self.cfg.seed)
        ids = model.generate(torch.tensor([newline], device=self.device), SAMPLE_CHARS, generator=g)[0, 1:].tolist()
        sample = corpus.tokenizer.decode(ids)
        self.say(sample)
        (run_dir / SAMPLE).write_text(sample, encoding="utf-8")
        append_metrics(
            run_dir,
            {
                "kind": "final",
                "step": self.state["step"],
                "val_loss_full": val_full,
                "chars_per_s": round(self.chars_per_s(), 1),
                "peak_fraction": round(self.utilisation(), 4),
                "elapsed_s": round(self.elapsed(), 3),
            },
        )
        plot_losses(run_dir / METRICS, run_dir / LOSS_PNG)
        # Last: a checkpoint with val_loss_full is what marks the run complete (a run killed
        # before this point resumes into finish() again).
        self.save(
            val_loss_full=val_full,
            chars_per_s=round(self.chars_per_s(), 1),
            peak_fraction=round(self.utilisation(), 4),
            peak_gflops=round(self.peak_flops / 1e9, 1),
        )

    def measure_kept(self, directory: Path, val_full: float) -> float:
        """The whole-split loss of a checkpoint kept beside the final weights (best/, average/),
        recorded in its config.json: measured, unless it holds the final weights alone."""
        meta = checkpoint.read_meta(directory)
        steps = meta.get("averaged_steps", [meta["step"]])
        loss = val_full
        if steps != [self.state["step"]]:
            kept = checkpoint.load_model(directory, meta).to(self.device)
            loss = full_split_loss(kept, self.corpus.val, self.model_cfg.block_size, self.device)
            which = (
                f"the mean of the weights at steps {', '.join(map(str, steps))}"
                if "averaged_steps" in meta
                else f"step {meta['step']}"
            )
            self.say(f"{directory.name} checkpoint ({directory}, {which}): val loss (whole split) {loss:.4f}")
        write_json(directory / checkpoint.CONFIG, {**meta, "val_loss_full": loss})
        return loss

    def _shutdown(self) -> None:
        if self.job.size > 1:
            # Release DDP's reducer (and the gloo work it holds) while Python is fully alive:
            # left to interpreter shutdown, gloo's threads can abort the process.
            self.step_model = self.model
            gc.collect()
            dist.barrier()  # rank 0 may still be finishing
            dist.destroy_process_group()


def export_reason(run_dir: Path, chosen: Path) -> str:
    if chosen != run_dir:
        return f"{chosen.name}/ has the lowest whole-split validation loss"
    if any((run_dir / name).is_dir() for name in KEPT_DIRS):
        return "the final weights have the lowest whole-split validation loss"
    return "the final weights"


def ranks_out_of_sync(model, device) -> int:
    """How many parameter tensors differ from rank 0's (DistributedDataParallel keeps this at 0)."""
    differ = 0
    for p in model.parameters():
        reference = p.detach().clone()
        dist.broadcast(reference, src=0)
        differ += int(not torch.equal(reference, p.detach()))
    t = torch.tensor([differ], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())

"""The training loop: AdamW, or Muon for the blocks' matrices and AdamW for the rest, optional
warmup + cosine, clipping, evaluation, checkpoints.

Reproducibility: every random draw of step s (its batch, its dropout masks) comes from a seed
derived from (seed, s, rank), not from a generator carried through the run. A checkpoint is
then just weights + optimizer state + step, and a resumed run continues exactly as an
uninterrupted one would have (bit for bit on CPU).
"""

from __future__ import annotations

import gc
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from . import checkpoint
from .budget import eval_seconds, fit_max_iters, refit_due
from .checkpoint import AVERAGE_DIR, BEST_DIR, add_to_mean
from .config import TrainConfig, lr_at, passes, run_dropout
from .data import Corpus, check_long_enough, get_batch
from .distributed import init_distributed, ranks_out_of_sync, step_seed
from .evaluation import autocast_for, estimate_loss
from .finish import SAMPLE_CHARS, finish
from .flops import measure_matmul_peak, peak_seconds, train_flops_per_char
from .metrics import append_metrics, trim_metrics
from .model import GPTConfig, GPTLanguageModel
from .optim import build_optimizers

LOG_EVERY = 10  # steps between train-loss lines in metrics.jsonl
FINISH_OVERHEAD_S = 3.0  # final checkpoint, sample file, loss plot (matplotlib's import)
SAMPLE_CALL_S = 0.003  # fixed cost of one forward call of the sample (layers, Python)
INTERRUPTED_EXIT = 130


class StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it between steps and saves before leaving."""

    def __init__(self):
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handler)

    def _handler(self, signum, frame):
        self.requested = True


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
            finish(self)
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

    def _shutdown(self) -> None:
        if self.job.size > 1:
            # Release DDP's reducer (and the gloo work it holds) while Python is fully alive:
            # left to interpreter shutdown, gloo's threads can abort the process.
            self.step_model = self.model
            gc.collect()
            dist.barrier()  # rank 0 may still be finishing
            dist.destroy_process_group()

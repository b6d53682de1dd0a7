"""A time budget's arithmetic: how many steps fit in what is left, and when to fit again. Pure
functions of steps and seconds, so that every rank of a job reaches the same answer."""

from __future__ import annotations

from .config import TrainConfig

REFITS = 10  # a time budget's run refits its length at least this often (and after each evaluation)


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

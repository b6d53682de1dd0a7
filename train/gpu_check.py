"""`python -m train.gpu_check --out DIR`: every CUDA path of the trainer, run once on a GPU, and
a report of what each did.

The steps are the project's own commands, each in a process of its own, as a user runs them:
1. the nanoGPT model (`--preset nanogpt-10m`, bf16 autocast) within a time budget;
2. `--compile`; 3. `torchrun --nproc_per_node 1` (NCCL); 4. a run interrupted by SIGINT and
resumed, against the same run uninterrupted; 5. the CPU recipe's optimizer (Muon) on CUDA
tensors; 6. the GPU recipe (`--preset shakespeare-gpu`) within its budget; 7. the export of
step 1's checkpoint on the CPU, with its verification table.
DIR/report.md and DIR/report.json hold the figures: losses, wall times, characters/s and MFU
against the card's bf16 peak. `--dry-run` runs every step on the CPU with tiny sizes (CI does).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from train.usage import fail

PROG = "python -m train.gpu_check"
# Dense bf16 tensor-core peaks (FLOP/s) from the cards' data sheets, for MFU; others print "-".
BF16_PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}
# --dry-run: the same commands on a model that trains in seconds on a CPU.
TINY = "--n-layer 1 --n-embd 48 --n-head 6 --block-size 8 --batch-size 4 --eval-iters 1".split()


@dataclass
class Result:
    step: str
    command: str
    ok: bool
    wall_s: float
    figures: dict = field(default_factory=dict)
    tail: str = ""  # the command's last output lines, kept when it failed


def run(step: str, args: list[str], env: dict, timeout: float) -> tuple[Result, subprocess.CompletedProcess | None]:
    start = time.perf_counter()
    try:
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Result(
            step, " ".join(args), False, time.perf_counter() - start, tail=f"timed out after {timeout:.0f} s"
        ), None
    wall = time.perf_counter() - start
    tail = "" if done.returncode == 0 else (done.stdout + done.stderr)[-1500:]
    return Result(step, " ".join(args), done.returncode == 0, wall, tail=tail), done


def run_figures(run_dir: Path, card_peak: float | None) -> dict:
    """The finished run's own record: whole-split validation loss, steps, characters/s, MFU."""
    from train import checkpoint
    from train.flops import train_flops_per_char
    from train.model import GPTConfig, GPTLanguageModel

    meta = checkpoint.read_meta(run_dir)
    cfg = GPTConfig.from_dict(meta["model"])
    figures = {
        "val_loss_full": meta.get("val_loss_full"),
        "steps": meta["step"],
        "elapsed_s": meta.get("elapsed_s"),
        "params_M": GPTLanguageModel(cfg).num_params() / 1e6,
        "chars_per_s": meta.get("chars_per_s"),
        "utilisation_vs_measured_fp32_matmul": meta.get("peak_fraction"),
    }
    if card_peak and meta.get("chars_per_s"):
        figures["mfu_vs_card_bf16_peak"] = meta["chars_per_s"] * train_flops_per_char(cfg) / card_peak
    for kept in checkpoint.KEPT_DIRS:  # best/ and average/, where the run wrote them
        if (run_dir / kept / checkpoint.CONFIG).is_file():
            figures[f"{kept}_val_loss_full"] = checkpoint.read_meta(run_dir / kept).get("val_loss_full")
    return figures


def interrupted_and_resumed(out: Path, base: list[str], device: list[str], env: dict, timeout: float) -> Result:
    """The same run twice: uninterrupted, and stopped by SIGINT after its first checkpoint past
    a third of the way, then resumed. Reports how far the final losses and weights differ (on
    a GPU, kernels may sum in another order after a restart; on a CPU they are equal)."""
    from safetensors.torch import load_file

    from train import checkpoint

    whole, parts = out / "resume-whole", out / "resume-parts"
    start = time.perf_counter()
    first, _ = run("resume: uninterrupted", [*base, "--out", str(whole)], env, timeout)
    if not first.ok:
        return Result("interrupted and resumed", first.command, False, first.wall_s, tail=first.tail)
    total = checkpoint.read_meta(whole)["step"]
    proc = subprocess.Popen(
        [*base, "--out", str(parts)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and (checkpoint.peek_step(parts) or 0) < total // 3:
        time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    said = "".join(proc.communicate(timeout=120))[-1500:]
    if proc.returncode != 130:  # 130: stopped by SIGINT after saving
        why = (
            "the run ended before SIGINT reached it; give it more steps"
            if proc.returncode == 0
            else f"the run exited with code {proc.returncode}"
        )
        return Result(
            "interrupted and resumed", " ".join(base), False, time.perf_counter() - start, tail=f"{why}:\n{said}"
        )
    stopped_at = checkpoint.read_meta(parts)["step"]
    resumed, _ = run(
        "resume: the rest", [*base[:3], "--resume", str(parts), *device], env, timeout
    )  # its data: recorded
    wall = time.perf_counter() - start
    if not resumed.ok:
        return Result("interrupted and resumed", resumed.command, False, wall, tail=resumed.tail)
    a, b = load_file(whole / checkpoint.WEIGHTS), load_file(parts / checkpoint.WEIGHTS)
    weight_diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    loss_diff = abs(checkpoint.read_meta(whole)["val_loss_full"] - checkpoint.read_meta(parts)["val_loss_full"])
    return Result(
        "interrupted and resumed",
        f"SIGINT at step {stopped_at} of {total}, then --resume",
        True,
        wall,
        {"stopped_at": stopped_at, "steps": total, "max_abs_weight_diff": weight_diff, "val_loss_full_diff": loss_diff},
    )


def describe_machine(dry_run: bool) -> tuple[dict, float | None]:
    import torch

    info = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "dry_run": dry_run,
        "python": sys.version.split()[0],
    }
    peak = None
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        info.update(
            gpu=name,
            gpus=torch.cuda.device_count(),
            bf16=torch.cuda.is_bf16_supported(),
            memory_gb=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
        )
        peak = next((v for k, v in BF16_PEAKS.items() if k in name), None)
        info["card_bf16_peak_tflops"] = peak / 1e12 if peak else None
    return info, peak


def report_markdown(info: dict, results: list[Result], export_table: str) -> str:
    lines = [
        "# GPU check",
        "",
        "```",
        json.dumps(info, indent=1),
        "```",
        "",
        "| step | ok | wall (s) | figures |",
        "| --- | --- | --- | --- |",
    ]
    for r in results:
        figures = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.figures.items())
        lines.append(f"| {r.step} | {'yes' if r.ok else 'NO'} | {r.wall_s:.1f} | {figures or '-'} |")
    failed = [r for r in results if not r.ok]
    for r in failed:
        lines += ["", f"## {r.step} failed", "", f"`{r.command}`", "", "```", r.tail.strip(), "```"]
    if export_table:
        lines += [
            "",
            "## Export verification (step 1's checkpoint, on the CPU)",
            "",
            "```",
            export_table.strip(),
            "```",
        ]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="new folder for the runs and the report")
    p.add_argument(
        "--data",
        help="the training text (default: Tiny Shakespeare, cached or downloaded; a GPU machine "
        "without network needs it given, e.g. ../shared/data/tinyshakespeare.txt)",
    )
    p.add_argument("--dry-run", action="store_true", help="every step on the CPU with tiny sizes (what CI runs)")
    p.add_argument(
        "--minutes", type=float, default=5.0, help="training budget of step 1 and of the GPU recipe (default 5)"
    )
    p.add_argument("--step-timeout", type=float, default=1200, help="seconds any one command may take (default 1200)")
    return p


def usage_problem(args: argparse.Namespace) -> str | None:
    """Why the check cannot run as asked, in one sentence; None when it can."""
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        return "this check needs a CUDA GPU and PyTorch sees none here; --dry-run runs it on the CPU with tiny sizes."
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        return f"{out} is not empty; give a new folder for --out."
    return None


@dataclass(frozen=True)
class Commands:
    """The trainer's command lines, on the GPU or (dry run) on the CPU with tiny sizes."""

    dry_run: bool
    data: list[str]  # ["--data", PATH], or none: the default text
    minutes: float

    @property
    def device(self) -> list[str]:
        return ["--device", "cpu" if self.dry_run else "cuda"]

    def train(self, preset: str, *args: str, launcher: tuple[str, ...] = ("train",)) -> list[str]:
        """`python -m train --preset PRESET ARGS` (or under another module, e.g. torchrun's)."""
        tiny = TINY if self.dry_run else []
        return [sys.executable, "-m", *launcher, *self.data, "--preset", preset, *self.device, *args, *tiny]

    def steps(self) -> list[tuple[str, list[str], str]]:
        """(name, command, run folder) of each step that trains once."""
        budget = min(self.minutes, 0.02) if self.dry_run else self.minutes
        short = ["--max-iters", "6" if self.dry_run else "200"]
        # The dry run compiles with aot_eager: the same torch.compile path, without the minute that
        # inductor's C++ build takes on a CPU (on the GPU, inductor builds Triton kernels).
        backend = ["aot_eager"] if self.dry_run else []
        torchrun = ("torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "train")
        return [
            ("nanogpt-10m, bf16 autocast", self.train("nanogpt-10m", "--time-budget", str(budget)), "nanogpt-10m"),
            ("--compile", self.train("nanogpt-10m", "--compile", *backend, *short), "compile"),
            ("torchrun --nproc_per_node 1", self.train("nanogpt-10m", *short, launcher=torchrun), "torchrun"),
            ("Muon (CPU recipe's optimizer)", self.train("quick", "--time-budget", str(budget / 5)), "muon"),
            ("shakespeare-gpu recipe", self.train("shakespeare-gpu", "--time-budget", str(budget)), "shakespeare-gpu"),
        ]

    def resumable(self) -> list[str]:
        """Enough steps after the signal's checkpoint that the run is still going when SIGINT
        comes (a tiny CPU step takes milliseconds; the watcher looks every 50 ms)."""
        steps, every = ("300", "30") if self.dry_run else ("600", "100")
        return self.train("nanogpt-10m", "--max-iters", steps, "--eval-interval", every)


def export_step(out: Path, env: dict, timeout: float) -> tuple[Result, str]:
    """Step 1's checkpoint exported on the CPU, as users run it; its verification table."""
    command = [sys.executable, "-m", "export", str(out / "nanogpt-10m"), "--lower-loss", "--out", f"{out / 'export'}/"]
    result, done = run("export on the CPU", command, dict(env, CUDA_VISIBLE_DEVICES=""), timeout)
    if done is None:
        return result, ""
    table = [line for line in done.stdout.splitlines() if not line.startswith(("exporting", "wrote"))]
    return result, "\n".join(table)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = usage_problem(args)
    if problem:
        return fail(PROG, problem)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info, card_peak = describe_machine(args.dry_run)
    print(json.dumps(info), flush=True)
    commands = Commands(args.dry_run, ["--data", str(Path(args.data).resolve())] if args.data else [], args.minutes)
    env = dict(os.environ)
    results = []
    for name, command, folder in commands.steps():
        result, _ = run(name, [*command, "--out", str(out / folder)], env, args.step_timeout)
        if result.ok:
            result.figures = run_figures(out / folder, card_peak)
        results.append(result)
        print(f"{name}: {'ok' if result.ok else 'FAILED'} in {result.wall_s:.1f} s {result.figures}", flush=True)
    results.append(interrupted_and_resumed(out, commands.resumable(), commands.device, env, args.step_timeout))
    print(f"interrupted and resumed: {results[-1].figures or results[-1].tail}", flush=True)
    export_table = ""
    if results[0].ok:
        result, export_table = export_step(out, env, args.step_timeout)
        results.append(result)
    report = report_markdown(info, results, export_table)
    (out / "report.md").write_text(report, encoding="utf-8")
    (out / "report.json").write_text(
        json.dumps({"machine": info, "steps": [asdict(r) for r in results]}, indent=1) + "\n"
    )
    print(report)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

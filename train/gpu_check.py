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

USAGE_ERROR = 2
# Dense bf16 tensor-core peaks (FLOP/s) from the cards' data sheets, for MFU; others print "-".
BF16_PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}
# --dry-run: the same commands on a model that trains in seconds on a CPU.
TINY = [
    "--n-layer",
    "1",
    "--n-embd",
    "48",
    "--n-head",
    "6",
    "--block-size",
    "8",
    "--batch-size",
    "4",
    "--eval-iters",
    "1",
]


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.gpu_check", description=__doc__.split("\n\n")[0])
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
    args = p.parse_args(argv)
    prog = "python -m train.gpu_check"
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print(
            f"{prog}: error: this check needs a CUDA GPU and PyTorch sees none here; --dry-run runs it on the CPU "
            "with tiny sizes.",
            file=sys.stderr,
        )
        return USAGE_ERROR
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        print(f"{prog}: error: {out} is not empty; give a new folder for --out.", file=sys.stderr)
        return USAGE_ERROR
    out.mkdir(parents=True, exist_ok=True)
    info, card_peak = describe_machine(args.dry_run)
    print(json.dumps(info), flush=True)

    device = ["--device", "cpu" if args.dry_run else "cuda"]
    data = ["--data", str(Path(args.data).resolve())] if args.data else []
    tiny = TINY if args.dry_run else []
    minutes = min(args.minutes, 0.02) if args.dry_run else args.minutes
    short = ["--max-iters", "6" if args.dry_run else "200"]
    env = dict(os.environ)
    py = [sys.executable, "-m", "train", *data]
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "1",
        "-m",
        "train",
        *data,
    ]
    steps = [
        (
            "nanogpt-10m, bf16 autocast",
            [*py, "--preset", "nanogpt-10m", *device, "--time-budget", str(minutes), *tiny],
            "nanogpt-10m",
        ),
        # The dry run compiles with aot_eager: the same torch.compile path, without the minute that
        # inductor's C++ build takes on a CPU (on the GPU, inductor builds Triton kernels).
        (
            "--compile",
            [
                *py,
                "--preset",
                "nanogpt-10m",
                *device,
                "--compile",
                *(["aot_eager"] if args.dry_run else []),
                *short,
                *tiny,
            ],
            "compile",
        ),
        ("torchrun --nproc_per_node 1", [*torchrun, "--preset", "nanogpt-10m", *device, *short, *tiny], "torchrun"),
        (
            "Muon (CPU recipe's optimizer)",
            [*py, "--preset", "quick", *device, "--time-budget", str(minutes / 5), *tiny],
            "muon",
        ),
        (
            "shakespeare-gpu recipe",
            [*py, "--preset", "shakespeare-gpu", *device, "--time-budget", str(minutes), *tiny],
            "shakespeare-gpu",
        ),
    ]
    results = []
    for name, command, folder in steps:
        result, _ = run(name, [*command, "--out", str(out / folder)], env, args.step_timeout)
        if result.ok:
            result.figures = run_figures(out / folder, card_peak)
        results.append(result)
        print(f"{name}: {'ok' if result.ok else 'FAILED'} in {result.wall_s:.1f} s {result.figures}", flush=True)
    # Enough steps after the signal's checkpoint that the run is still going when SIGINT comes (a
    # tiny CPU step takes milliseconds; the watcher looks every 50 ms).
    resume_base = [
        *py,
        "--preset",
        "nanogpt-10m",
        *device,
        "--max-iters",
        "300" if args.dry_run else "600",
        "--eval-interval",
        "30" if args.dry_run else "100",
        *tiny,
    ]
    results.append(interrupted_and_resumed(out, resume_base, device, env, args.step_timeout))
    print(f"interrupted and resumed: {results[-1].figures or results[-1].tail}", flush=True)

    export_table = ""
    if results[0].ok:  # the export runs on the CPU, as users run it
        cpu_env = dict(env, CUDA_VISIBLE_DEVICES="")
        result, done = run(
            "export on the CPU",
            [sys.executable, "-m", "export", str(out / "nanogpt-10m"), "--lower-loss", "--out", f"{out / 'export'}/"],
            cpu_env,
            args.step_timeout,
        )
        if done is not None:
            export_table = "\n".join(
                line for line in done.stdout.splitlines() if not line.startswith(("exporting", "wrote"))
            )
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

"""`python -m benchmarks.drafts`: what drafting gains at each temperature, side by side.

The engine (webapp/inference/engine.py) on one model folder, three ways: drafting from the text's own
repeats and the model's draft table (as it serves), from the text's own repeats only, and without
drafts (one character a step). Each continues the same prompt (the start of the validation
split) with each seed at each temperature; the three ways run in turn, round after round, so a
slow moment of these shared cores falls on each alike. Drafts never change the text (the table
says whether the three texts were equal); they change how many ring steps write it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from train.files import new_output_file, write_json
from train.table import format_table as table
from train.usage import fail
from webapp.inference.engine import Engine
from webapp.inference.onnx_model import SHIPPED_MODEL, ModelLoadError
from webapp.inference.sampling import SamplingParams

from .prompt import DEFAULT_DATA, load_prompt

WAYS = ("draft table and own repeats", "own repeats only", "no drafts (one character a step)")


def engines(model: str) -> dict[str, Engine]:
    return dict(
        zip(
            WAYS,
            (
                Engine(model, device="cpu"),
                Engine(model, device="cpu", table=False),
                Engine(model, device="cpu", max_draft=0),
            ),
        )
    )


def timed_steps(engine: Engine, prompt: str, settings: SamplingParams) -> tuple[str, float, int]:
    """(the text, seconds, ring steps) of one completion."""
    steps, forward = [], engine.ring.forward
    engine.ring.forward = lambda ids, state: (steps.append(1), forward(ids, state))[1]
    try:
        start = time.perf_counter()
        text = engine.complete(prompt, settings)[0]
        return text, time.perf_counter() - start, len(steps)
    finally:
        del engine.ring.forward


def measure(
    ways: dict[str, Engine], prompt: str, chars: int, temperature: float, seeds: list[int], runs: int
) -> list[dict]:
    """One row per way: characters/s over all seeds (each seed's median of `runs`), ring steps per
    100 characters, and whether its texts were the first way's."""
    seconds, steps, texts = dict.fromkeys(ways, 0.0), dict.fromkeys(ways, 0), {name: [] for name in ways}
    for seed in seeds:
        settings = SamplingParams(max_new_tokens=chars, temperature=temperature, seed=seed)
        times, last = {name: [] for name in ways}, {}
        for round_ in range(runs + 1):  # round 0 is untimed: a first call pays one-off set-up costs
            for name, engine in ways.items():
                text, took, count = last[name] = timed_steps(engine, prompt, settings)
                times[name] += [took] if round_ else []
        for name, (text, _, count) in last.items():
            seconds[name] += statistics.median(times[name])
            steps[name] += count
            texts[name].append(text)
    first = next(iter(ways))
    return [
        {
            "temperature": temperature,
            "drafts": name,
            "chars_per_s": chars * len(seeds) / seconds[name],
            "steps_per_100_chars": 100 * steps[name] / (chars * len(seeds)),
            "same_text": texts[name] == texts[first],
        }
        for name in ways
    ]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.drafts", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        default=str(SHIPPED_MODEL),
        help="a model folder or .onnx file with a ring file (default: the shipped model)",
    )
    p.add_argument("--data", default=str(DEFAULT_DATA), help="text whose validation split gives the prompt")
    p.add_argument("--prompt-chars", type=int, default=200, help="prompt length in characters")
    p.add_argument("--chars", type=int, default=300, help="new characters per text")
    p.add_argument(
        "--temperatures", type=float, nargs="+", default=[0, 0.5, 0.8, 1.0], help="temperatures (0: greedy, one seed)"
    )
    p.add_argument("--seeds", type=int, default=6, help="seeds 1..N per temperature above 0")
    p.add_argument("--runs", type=int, default=3, help="timed runs per text; the median is taken")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = "python -m benchmarks.drafts"
    temperatures_ok = all(0 <= t <= 10 for t in args.temperatures)
    if min(args.prompt_chars, args.chars, args.seeds, args.runs) < 1 or not temperatures_ok:
        return fail(prog, "--prompt-chars, --chars, --seeds and --runs must be at least 1, temperatures from 0 to 10.")
    try:
        json_out = new_output_file(args.json, "--json") if args.json else None
        ways = engines(args.model)
    except (ModelLoadError, ValueError, OSError) as e:
        return fail(prog, str(e))
    if ways[WAYS[0]].ring is None or ways[WAYS[0]].draft_table is None:
        return fail(prog, f"{args.model} has no ring file or no draft table to draft with (export a rotary model).")
    prompt = load_prompt(Path(args.data), args.prompt_chars)
    rows = []
    for temperature in args.temperatures:
        seeds = [0] if temperature == 0 else list(range(1, args.seeds + 1))
        rows += measure(ways, prompt, args.chars, temperature, seeds, args.runs)
        print(f"  temperature {temperature}: done", file=sys.stderr, flush=True)
    plain = {r["temperature"]: r["chars_per_s"] for r in rows if r["drafts"] == WAYS[-1]}
    lines = [("temperature", "drafts", "chars/s", "ring steps per 100 chars", "× no drafts", "same text")]
    lines += [
        (
            f"{r['temperature']:g}",
            r["drafts"],
            f"{r['chars_per_s']:,.0f}",
            f"{r['steps_per_100_chars']:.1f}",
            f"{r['chars_per_s'] / plain[r['temperature']]:.2f}",
            "yes" if r["same_text"] else "no",
        )
        for r in rows
    ]
    print(
        f"{args.model}: prompt {len(prompt)} characters, {args.chars} new per text, seeds 1-{args.seeds} (greedy: "
        "one text), "
        f"median of {args.runs} runs each"
    )
    print(table(lines))
    if json_out:
        write_json(
            json_out, {"model": args.model, "chars": args.chars, "seeds": args.seeds, "runs": args.runs, "rows": rows}
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

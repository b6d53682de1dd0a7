"""`python -m benchmarks.generation`: every way this project can generate text, timed side by side.

For one exported model (default: the shipped models/chargpt), its float32 and int8 forms (one
made from the other: quantized, or its int8 weights stored as float32) and the PyTorch model
with the same weights (rebuilt from the ONNX file's named weights, or read from --checkpoint),
each decoder continues the same prompt greedily for --chars characters at batch 1 and batch 8:

  1. PyTorch, lecture-style (the code the project started from): the last block_size characters
     recomputed for every character
  2. PyTorch, the plain loop: a prefill, then one cached step per character (what the graph is)
  3. onnxruntime without a cache (the last block_size characters per character, as row 1)
  4. the web app's engine (the plain loop on onnxruntime, its steps on the ring file where the
     model has one, each step also checking characters drafted from the text's own repeats and
     the model's draft table: webapp/inference/drafting.py), float32 and int8 weights; the engine
     on the given file asked for what the pages show at each character (its five likeliest
     alternatives: the cost of the pages' views); and, with a ring file, the engine on the given
     file drafting without the table, and without drafts, one character a step
  5. the floor: the step interface alone in a tight loop, one character a step, no sampling or
     drafting (on the given file), and, where the model has one, on its ring file
     (webapp/inference/ring.py: the file the engine's cached steps run); the overhead line
     compares the engine without drafts with the floor of the file it steps with
  6. the static page (webapp/web, onnxruntime-web in headless Chromium, one thread), driven as a
     visitor drives it, at batch 1, timed by the page itself (skipped, with the reason, where
     node, chromium or playwright is missing; --no-page skips it)

Each decoder first writes a few untimed characters (a first call pays one-off set-up costs). The
table gives characters/s, time to first character (the prompt's prefill included) and
each row's speed-up over row 1. Greedy decoding makes the texts comparable: each row must write
the text of the row that follows the same rule (3 as 1; 2 and 4 as the float32 engine; 6 as the
engine on the same file), and the
table says whether it did. The two rules agree exactly for learned positions; for rotary ones
the plain loop's sliding window may pick another character where two are nearly tied.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from export.onnx_export import torch_model_from_onnx
from train.files import new_output_file, write_json
from train.table import format_table as table
from train.usage import fail
from webapp.inference.engine import Engine
from webapp.inference.onnx_model import SHIPPED_MODEL, ModelLoadError, PlainSteps
from webapp.inference.sampling import PAGE_ALTERNATIVES

from .decoders import Decoder, engine_decoder, float32_and_int8, lecture_style, onnx_uncached, steps_floor, torch_cached
from .page import PageUnavailable, StaticPage, static_page
from .prompt import DEFAULT_DATA, load_prompt

PROG = "python -m benchmarks.generation"
WARM_UP_CHARS = 8
# The table's rows (the module's docstring describes each).
LECTURE = "1. PyTorch, lecture-style (last window)"
TORCH_CACHED = "2. PyTorch, plain loop (KV cache)"
ONNX_UNCACHED = "3. onnxruntime, no cache (last window)"
ENGINE_FP32 = "4. engine, float32"
ENGINE_INT8 = "4. engine, int8 weights"
ONE_A_STEP = "4. engine, one character a step"  # the given file without drafts (webapp/inference/drafting.py)
NO_TABLE = "4. engine, drafts without the table"  # the given file drafting from the text's own repeats only
ALTERNATIVES = "4. engine, with the pages' alternatives"  # the given file, each character with its likeliest
MODEL_FLOOR = "5. floor: model file steps"
RING_FLOOR = "5. floor: ring file steps"
PAGE = "6. static page (onnxruntime-web, Chromium)"


@dataclass
class Row:
    decoder: str
    batch: int
    chars: int
    chars_per_s: float
    ms_per_char: float
    first_char_ms: float
    runs: int
    same_text: bool | None = None
    speedup: float | None = None


class PageDecoder:
    """The static page, batch 1 only. It times itself (from the click to the last character), so
    time_once asks it for its whole run instead of iterating it."""

    def __init__(self, page: StaticPage, vocab: list[str]):
        self.page, self.vocab = page, vocab
        self.index = {c: i for i, c in enumerate(vocab)}

    def timed(self, prompt: np.ndarray, n: int) -> tuple[np.ndarray, float, float]:
        run = self.page.generate("".join(self.vocab[i] for i in prompt[0]), n)
        return np.array([[self.index[c] for c in run.text]]), run.seconds, run.first_ms / 1000


def time_once(decoder: Decoder | PageDecoder, prompt: np.ndarray, n: int) -> tuple[np.ndarray, float, float]:
    """(ids [B, n], seconds for all n steps, seconds to the first)."""
    if isinstance(decoder, PageDecoder):
        return decoder.timed(prompt, n)
    steps, first = [], None
    start = time.perf_counter()
    for step in decoder(prompt, n):
        if first is None:
            first = time.perf_counter() - start
        steps.append(step)
    return np.stack(steps, axis=1), time.perf_counter() - start, first


def benchmark(
    decoders: dict[str, Decoder],
    prompt_ids: list[int],
    n: int,
    batches: list[int],
    runs: int,
    slow_runs: int,
    slow: set[str],
    reference: str,
    same_as: dict[str, str],
    batch_one_only: set[str] = frozenset(),
) -> list[Row]:
    """Medians over rounds in which every decoder runs once in turn: a slow minute of these
    shared cores then falls on all rows alike instead of on whichever row it met. Speed-ups are
    over `reference`; same_as names, for a decoder, the decoder whose text it must write."""
    rows = []
    for batch in batches:
        prompt = np.tile(np.array(prompt_ids, dtype=np.int64), (batch, 1))
        planned = {
            name: slow_runs if name in slow else runs for name in decoders if batch == 1 or name not in batch_one_only
        }
        totals, firsts, ids = ({name: [] for name in decoders} for _ in range(3))
        for name in planned:  # untimed: a first call pays for one-off set-up (PyTorch's, the page's JIT)
            time_once(decoders[name], prompt, WARM_UP_CHARS)
        for round_ in range(max(planned.values())):
            for name, decoder in decoders.items():
                if round_ < planned.get(name, 0):
                    ids[name], total, first = time_once(decoder, prompt, n)
                    totals[name].append(total)
                    firsts[name].append(first)
        reference_rate = batch * n / statistics.median(totals[reference])
        for name in planned:
            total = statistics.median(totals[name])
            row = Row(
                name,
                batch,
                n,
                batch * n / total,
                1000 * total / n,
                1000 * statistics.median(firsts[name]),
                planned[name],
            )
            if name in same_as:
                row.same_text = bool(np.array_equal(ids[name], ids[same_as[name]]))
            row.speedup = row.chars_per_s / reference_rate
            rows.append(row)
            print(f"  {name}, batch {batch}: {row.chars_per_s:,.0f} characters/s", file=sys.stderr, flush=True)
    return rows


def results_table(
    rows: list[Row],
    floor: str,
    engine: str,
    page: str | None = None,
    one_a_step: str | None = None,
    no_table: str | None = None,
    alternatives: str | None = None,
) -> str:
    """The table, then per batch: the engine's time over its floor (`one_a_step`: the engine
    without drafts, which steps as the floor does; the engine itself when it is that), what
    drafts gained (and the draft table among them: `no_table`, the engine drafting without it),
    what the pages' alternatives cost (`alternatives`, the engine asked for them), and the
    static page against both engine rows and the floor."""
    one_a_step = one_a_step or engine
    header = ("decoder", "batch", "chars/s", "ms/char", "first char (ms)", "× row 1", "same text as its rule's")
    text = [table([header, *(row_cells(r) for r in rows)])]
    for batch in sorted({r.batch for r in rows}):
        by_name = {r.decoder: r for r in rows if r.batch == batch}
        text += ratio_lines(batch, by_name, floor, engine, page, one_a_step, no_table, alternatives)
    return "\n".join(text)


def row_cells(r: Row) -> tuple[str, ...]:
    same = "-" if r.same_text is None else ("yes" if r.same_text else "no")
    speedup = f"{r.speedup:.1f}" if r.speedup else "-"
    return (
        r.decoder,
        str(r.batch),
        f"{r.chars_per_s:,.0f}",
        f"{r.ms_per_char:.3f}",
        f"{r.first_char_ms:.2f}",
        speedup,
        same,
    )


def ratio_lines(batch, by_name, floor, engine, page, one_a_step, no_table, alternatives) -> list[str]:
    """results_table's lines for one batch size: each ratio whose two rows it has."""

    def rate(name: str) -> float:
        return by_name[name].chars_per_s

    lines = []
    if floor in by_name and one_a_step in by_name:
        overhead = rate(floor) / rate(one_a_step) - 1
        lines.append(
            f"batch {batch}: row '{one_a_step}' takes {overhead:+.1%} time over the floor of the file it steps with"
        )
    if one_a_step != engine and {engine, one_a_step} <= by_name.keys():
        lines.append(
            f"batch {batch}: drafts: row '{engine}' is {rate(engine) / rate(one_a_step):.2f}x row '{one_a_step}'"
        )
    if no_table in by_name and engine in by_name:
        lines.append(
            f"batch {batch}: draft table: row '{engine}' is {rate(engine) / rate(no_table):.2f}x row '{no_table}'"
        )
    if alternatives in by_name and engine in by_name:
        ratio = rate(alternatives) / rate(engine)
        lines.append(f"batch {batch}: alternatives: row '{alternatives}' is {ratio:.2f}x row '{engine}'")
    if page in by_name and engine in by_name:
        line = f"batch {batch}: page / native = {rate(page) / rate(engine):.2f} against row '{engine}'"
        if one_a_step != engine:
            line += f", {rate(page) / rate(one_a_step):.2f} against row '{one_a_step}'"
        lines.append(line + f", {rate(page) / rate(floor):.2f} against the floor")
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        default=str(SHIPPED_MODEL),
        help="exported model, a folder or an .onnx file, float32 or int8 (default: the shipped model)",
    )
    p.add_argument(
        "--checkpoint",
        help="run directory holding the PyTorch weights (default: read them from --model); with an int8 --model, "
        "the float32 rows are exported from them too",
    )
    p.add_argument("--data", default=str(DEFAULT_DATA), help="text whose validation split gives the prompt")
    p.add_argument("--prompt-chars", type=int, default=200, help="prompt length in characters")
    p.add_argument("--chars", type=int, default=500, help="new characters per generation")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes")
    p.add_argument("--runs", type=int, default=5, help="runs per fast decoder; the median is reported")
    p.add_argument("--slow-runs", type=int, default=1, help="runs of the decoders that recompute the whole context")
    p.add_argument("--threads", type=int, help="PyTorch threads (default: PyTorch's choice)")
    p.add_argument(
        "--spinning",
        action="store_true",
        help="the engines' onnxruntime threads keep spinning after each run "
        "(onnxruntime's default) instead of stopping (the engine's): to compare the two",
    )
    p.add_argument("--no-page", action="store_true", help="skip the static page's row")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    return p


def load_models(args: argparse.Namespace) -> tuple[Engine, torch.nn.Module]:
    """The engine on --model, and the PyTorch model with its weights (or --checkpoint's)."""
    engine = Engine(args.model, device="cpu", spinning=args.spinning)
    if not args.checkpoint:
        return engine, torch_model_from_onnx(engine.path)
    from train import checkpoint

    return engine, checkpoint.load_model(Path(args.checkpoint))  # eval mode: no dropout


def engine_rows(engine: Engine, fp32: Engine, int8: Engine, spinning: bool) -> dict[str, Decoder]:
    """Row 4: the engine on both forms; on the given file, without drafts and without the
    draft table where it has them, and asked for the pages' alternatives."""
    rows = {ENGINE_FP32: engine_decoder(fp32), ENGINE_INT8: engine_decoder(int8)}
    if engine.ring:  # (drafts need the ring file)
        rows[ONE_A_STEP] = engine_decoder(Engine(engine.path, device="cpu", spinning=spinning, max_draft=0))
    if engine.draft_table:
        rows[NO_TABLE] = engine_decoder(Engine(engine.path, device="cpu", spinning=spinning, table=False))
    rows[ALTERNATIVES] = engine_decoder(engine, alternatives=PAGE_ALTERNATIVES)
    return rows


def page_row(engine: Engine, tmp: Path, stack: contextlib.ExitStack) -> dict[str, PageDecoder]:
    """Row 6, or none (with the reason) where the static page cannot run here."""
    try:
        return {PAGE: PageDecoder(stack.enter_context(static_page(engine.path, tmp)), engine.vocab)}
    except PageUnavailable as e:
        print(f"note: no static page row: {e}", file=sys.stderr)
        return {}


def same_text_rules(engine_row: str) -> dict[str, str]:
    """For each row, the row whose text it must write (the module's docstring says why)."""
    return {
        ONNX_UNCACHED: LECTURE,
        TORCH_CACHED: ENGINE_FP32,
        ENGINE_INT8: ENGINE_FP32,
        **dict.fromkeys((ONE_A_STEP, NO_TABLE, ALTERNATIVES, PAGE), engine_row),
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if min(args.prompt_chars, args.chars, args.runs, args.slow_runs, *args.batch) < 1:
        return fail(PROG, "--prompt-chars, --chars, --runs, --slow-runs and --batch must be at least 1.")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        json_out = new_output_file(args.json, "--json") if args.json else None
        engine, model = load_models(args)
    except (ModelLoadError, ValueError, OSError) as e:
        return fail(PROG, str(e))
    prompt_text = load_prompt(Path(args.data), args.prompt_chars)
    prompt_ids = [engine.vocab.index(c) for c in prompt_text if c in engine.vocab]
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        fp32, int8 = float32_and_int8(engine, Path(tmp), model if args.checkpoint else None)
        decoders = {
            LECTURE: lecture_style(model),
            TORCH_CACHED: torch_cached(model),
            ONNX_UNCACHED: onnx_uncached(fp32),
            **engine_rows(engine, fp32, int8, args.spinning),
            MODEL_FLOOR: steps_floor(PlainSteps(engine)),  # on the given file, like its engine rows
            **({RING_FLOOR: steps_floor(engine.ring)} if engine.ring else {}),  # the file the engine steps with
            **({} if args.no_page else page_row(engine, Path(tmp), stack)),
        }
        print(
            f"{args.model}: block_size {engine.block_size}, prompt {len(prompt_ids)} characters, {args.chars} new, "
            f"greedy; torch {torch.__version__} ({torch.get_num_threads()} threads)",
            file=sys.stderr,
        )
        engine_row = ENGINE_FP32 if engine is fp32 else ENGINE_INT8  # the engine on the given file
        rows = benchmark(
            decoders,
            prompt_ids,
            args.chars,
            args.batch,
            args.runs,
            args.slow_runs,
            slow={LECTURE, ONNX_UNCACHED},
            reference=LECTURE,
            same_as=same_text_rules(engine_row),
            batch_one_only={PAGE},
        )
    floor = RING_FLOOR if engine.ring else MODEL_FLOOR
    one_a_step = ONE_A_STEP if engine.ring else engine_row
    print(results_table(rows, floor, engine_row, PAGE, one_a_step, NO_TABLE, ALTERNATIVES))
    if json_out:
        figures = {"model": args.model, "block_size": engine.block_size, "prompt_chars": len(prompt_ids)}
        write_json(json_out, {**figures, "rows": [asdict(r) for r in rows]})
    return 0


if __name__ == "__main__":
    sys.exit(main())

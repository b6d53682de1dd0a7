"""PyTorch -> ONNX with a KV cache, and the verification that decides whether the file is kept."""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from train.model import GPTLanguageModel
from train.table import format_table as table
from webapp.inference.attention import ATTENTIONS, AttentionFile
from webapp.inference.engine import Engine
from webapp.inference.onnx_model import INPUT_IDS, LOGITS, PAST, PRESENT, OnnxModel, cache_names, open_session
from webapp.inference.ring import NEW, RING, RING_MASK, RING_TOLERANCE, ROTARY_COS, ROTARY_SIN, RingStep
from webapp.inference.sampling import SamplingParams

from .runtime import last_window_loss, plain_loop_loss

TOLERANCE = 1e-4  # max |logit difference| between PyTorch and onnxruntime, float32
GREEDY_CHARS = 200
# The plain loop (the window in the graph) against an exact last window, on validation text:
# at most this much worse, in nats per character.
PLAIN_LOOP_CHARS, PLAIN_LOOP_SLACK = 1500, 0.01


# The logit of the end-of-text id (vocab_size, one past the characters): a character model has
# no end of text, but generation libraries need an end id (onnxruntime-genai insists that it
# index the logits). Its probability is exp(-1e9) = 0 at any temperature, and being finite it
# cannot turn a library's arithmetic into NaN.
END_OF_TEXT_LOGIT = -1e9


class CachedLM(torch.nn.Module):
    """The model with flat inputs and outputs, as the ONNX graph has them:
    (input_ids, past.0.key, past.0.value, ...) -> (logits, present.0.key, present.0.value, ...),
    the model's cached path (GPTLanguageModel.decode), with the end-of-text logit appended. With
    attention, the attention file's output too (GPTLanguageModel.attention): export traces both
    files in one program and splits it (`keep_outputs`)."""

    def __init__(self, model: GPTLanguageModel, attention: bool = False):
        super().__init__()
        self.model = model
        self.attention = attention

    def forward(self, input_ids, *past):
        pairs = [(past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)]
        if self.attention:
            logits, presents, weights = self.model.decode_with_attention(input_ids, pairs)
        else:
            logits, presents = self.model.decode(input_ids, pairs)
        end = torch.full_like(logits[..., :1], END_OF_TEXT_LOGIT)
        outputs = (torch.cat((logits, end), dim=-1), *[t for pair in presents for t in pair])
        return (*outputs, weights) if self.attention else outputs


@contextlib.contextmanager
def quiet_loggers(*names: str):
    loggers = [logging.getLogger(n) for n in names]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)


def past_names(n_layer: int) -> list[str]:
    return cache_names(PAST, n_layer)


class RingLM(torch.nn.Module):
    """GPTLanguageModel.step_ring with flat inputs and outputs, as the ring file has them
    (webapp/inference/ring.py): (input_ids, rotary_cos, rotary_sin, ring_mask, ring.0.key, ring.0.value,
    ...) -> (logits, new.0.key, new.0.value, ...)."""

    def __init__(self, model: GPTLanguageModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, cos, sin, mask, *ring):
        pairs = [(ring[2 * i], ring[2 * i + 1]) for i in range(len(ring) // 2)]
        logits, new = self.model.step_ring(input_ids, cos, sin, mask, pairs)
        return (logits, *[t for pair in new for t in pair])


def save_program(
    module: torch.nn.Module,
    args: tuple,
    input_names: list[str],
    output_names: list[str],
    dynamic_shapes: dict,
    path: Path,
) -> None:
    with warnings.catch_warnings(), quiet_loggers("torch.onnx", "torch.export"):
        warnings.simplefilter("ignore")  # the exporter's chatter (deprecations, torchvision absent)
        program = torch.onnx.export(
            module.eval(),
            args,
            dynamo=True,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=dynamic_shapes,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    program.save(str(path), external_data=False)


def export_onnx(model: GPTLanguageModel, path: Path, attention_file: Path | None = None) -> None:
    """Write `model` to one self-contained ONNX file with dynamic batch, sequence and past, and,
    given attention_file, its attention file (webapp/inference/attention.py) there: both from one
    traced program (an export's longest part), split by their outputs."""
    cfg = model.config
    names = past_names(cfg.n_layer)
    model_outputs = [LOGITS, *cache_names(PRESENT, cfg.n_layer)]
    # The dimension names the ecosystem's tools read (transformers.js sizes an empty cache from batch_size).
    batch, sequence, past_sequence = (
        torch.export.Dim(n) for n in ("batch_size", "sequence_length", "past_sequence_length")
    )
    # Example sizes other than 0 and 1, so that no dimension is specialised to a constant.
    ids = torch.zeros(2, 3, dtype=torch.long)
    past = [torch.zeros(2, cfg.n_head, 4, cfg.head_dim) for _ in names]
    save_program(
        CachedLM(model, attention_file is not None),
        (ids, *past),
        [INPUT_IDS, *names],
        model_outputs + [ATTENTIONS] * (attention_file is not None),
        {"input_ids": {0: batch, 1: sequence}, "past": tuple({0: batch, 2: past_sequence} for _ in names)},
        path,
    )
    proto = onnx.load(str(path))
    if attention_file is not None:
        onnx.save(keep_outputs(proto, [ATTENTIONS]), str(attention_file))
        proto = keep_outputs(proto, model_outputs)
    # The exporter names the presents' length by its formula, min(past + new, block_size - 1).
    for output in proto.graph.output[1:]:
        output.type.tensor_type.shape.dim[2].dim_param = "present_sequence_length"
    onnx.save(proto, str(path))


def export_attention(model: GPTLanguageModel, path: Path) -> None:
    """The attention file alone, for a model exported before chargpt wrote it."""
    model_file = path.with_name(path.name + ".model.onnx")
    try:
        export_onnx(model, model_file, path)
    finally:
        model_file.unlink(missing_ok=True)


def keep_outputs(proto: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of the graph with only the outputs `names` and what computes them (every input
    stays, as the graph's contract)."""
    kept = onnx.ModelProto()
    kept.CopyFrom(proto)
    graph = kept.graph
    outputs = [o for o in graph.output if o.name in names]
    del graph.output[:]
    graph.output.extend(outputs)
    needed, nodes = set(names), []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            nodes.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(nodes))
    initializers = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    values = [v for v in graph.value_info if v.name in needed]
    del graph.value_info[:]
    graph.value_info.extend(values)
    return kept


def export_ring(model: GPTLanguageModel, path: Path) -> None:
    """Write the ring step of a rotary `model` (webapp/inference/ring.py) to one ONNX file, batch and
    new positions dynamic."""
    cfg = model.config
    names = cache_names(RING, cfg.n_layer)
    batch, sequence = torch.export.Dim("batch_size"), torch.export.Dim("sequence_length", max=cfg.block_size - 1)
    slots, rows, new = cfg.block_size - 1, 2, 3  # example sizes other than 0 and 1: no dimension made a constant
    args = (
        torch.zeros(rows, new, dtype=torch.long),
        torch.zeros(rows, new, cfg.head_dim),
        torch.zeros(rows, new, cfg.head_dim),
        torch.zeros(rows, new, slots + new),
        *[torch.zeros(rows, cfg.n_head, slots, cfg.head_dim) for _ in names],
    )
    save_program(
        RingLM(model),
        args,
        [INPUT_IDS, ROTARY_COS, ROTARY_SIN, RING_MASK, *names],
        [LOGITS, *cache_names(NEW, cfg.n_layer)],
        {
            "input_ids": {0: batch, 1: sequence},
            "cos": {0: batch, 1: sequence},
            "sin": {0: batch, 1: sequence},
            "mask": {0: batch, 1: sequence, 2: slots + sequence},
            "ring": tuple({0: batch} for _ in names),
        },
        path,
    )


TRANSPOSED = ".T"  # suffix of an initializer that holds a parameter transposed (Linear weights)


def name_weights(path: Path, model: GPTLanguageModel) -> None:
    """Give every initializer that holds a parameter, as is or transposed, that parameter's name
    ("model.blocks.0.attn.qkv.weight.T"): the exporter folds Linear weights into anonymous
    transposed constants ("val_15"). Named weights let a second runtime, or the benchmark's
    PyTorch rows (torch_model_from_onnx), rebuild the exact model from the ONNX file alone."""
    proto = onnx.load(str(path))
    wanted = {}
    for name, tensor in CachedLM(model).state_dict(keep_vars=False).items():
        array = tensor.detach().cpu().numpy()
        wanted.setdefault((array.shape, array.tobytes()), name)
        if array.ndim == 2:
            wanted.setdefault((array.T.shape, np.ascontiguousarray(array.T).tobytes()), name + TRANSPOSED)
    renamed = {}
    for init in proto.graph.initializer:
        array = numpy_helper.to_array(init)
        new = wanted.get((array.shape, array.tobytes()))
        if new is not None and new != init.name and new not in renamed.values():
            renamed[init.name] = new
            init.name = new
    for node in proto.graph.node:
        node.input[:] = [renamed.get(n, n) for n in node.input]
    onnx.save(proto, str(path))


def torch_model_from_onnx(path: Path) -> GPTLanguageModel:
    """The PyTorch model whose weights an exported file carries (see name_weights): exactly the
    checkpoint's for a float32 file, the dequantized weights for an int8 one."""
    from train.model import GPTConfig
    from webapp.inference.onnx_model import parse_metadata

    proto = onnx.load(str(path))
    meta = parse_metadata({p.key: p.value for p in proto.metadata_props}, str(path))
    fields = GPTConfig.__dataclass_fields__
    config = {k: v for k, v in meta["config"].items() if k in fields}  # not the derived head_dim, receptive_field
    model = GPTLanguageModel(GPTConfig(**config, dropout=0.0))
    arrays = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    state = {}
    for name in model.state_dict():
        key = "model." + name
        if key in arrays:
            state[name] = torch.from_numpy(arrays[key].copy())
        elif key + TRANSPOSED in arrays:
            state[name] = torch.from_numpy(arrays[key + TRANSPOSED].T.copy())
        elif key + TRANSPOSED + INT8_SUFFIXES[0] in arrays:
            base = key + TRANSPOSED
            weight = dequantize_int8(arrays[base + INT8_SUFFIXES[0]], arrays[base + INT8_SUFFIXES[1]])
            state[name] = torch.from_numpy(weight.T.copy())
        elif name != "lm_head.weight" or not model.config.tie_weights:
            raise ValueError(
                f"{path} does not carry the weight {name} by name (it was exported before weights "
                "were named); export the checkpoint again."
            )
    if model.config.tie_weights:
        state.setdefault("lm_head.weight", state["token_embedding.weight"])
    model.load_state_dict(state)
    return model.eval()


INT8_SUFFIXES = ("_int8", "_scale")  # a quantized weight's initializers: int8 values, float32 scales


def int8_weights(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """An int8 file's quantized weights (quantize_weights_int8), by the name of the float32 weight
    each replaces: (int8 values, scales). Empty for a float32 file."""
    arrays = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    q_suffix, scale_suffix = INT8_SUFFIXES
    bases = [name[: -len(q_suffix)] for name in arrays if name.endswith(q_suffix)]
    return {base: (arrays[base + q_suffix], arrays[base + scale_suffix]) for base in bases}


def dequantize_int8(q: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """The graph's Cast + Mul for a weight [K, N] with one scale per column: float(q) * scale."""
    return q.astype(np.float32) * scales.astype(np.float32)[None, :]


def quantize_weights_int8(
    source: Path, target: Path, given: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
) -> None:
    """Every MatMul weight stored as int8 with one float32 scale per output column (symmetric,
    weight-only; activations stay float32), turned back into float32 in the graph by a Cast and
    a Mul. Those have constant inputs only, so onnxruntime folds them into float32 weights when
    the session loads: the file is a quarter of the size, decodes as fast as float32 and gives
    the same logits for a prefill and for cached decoding. Not DequantizeLinear, which onnxruntime
    fuses into kernels that quantize activations per call (a prefill and cached decoding then
    disagree), nor MatMulNBits, a contrib operator that decoded slower (docs/model-folder.md).
    Any ONNX runtime runs the result. Metadata is kept. given: int8 values and scales to use for
    the weights it names (those of an int8 file whose weights `source` holds dequantized)."""
    proto = onnx.load(str(source))
    graph = proto.graph
    initializers = {i.name: i for i in graph.initializer}
    dequantize = []
    for node in graph.node:
        name = node.input[1] if node.op_type == "MatMul" and len(node.input) == 2 else None
        if name not in initializers or len(initializers[name].dims) != 2:
            continue
        if given and name in given:
            q, scale = given[name]
        else:
            weight = numpy_helper.to_array(initializers[name])
            scale = (np.abs(weight).max(axis=0) / 127).astype(np.float32)
            scale[scale == 0] = 1.0
            q = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
        graph.initializer.remove(initializers.pop(name))
        q_name, scale_name = name + INT8_SUFFIXES[0], name + INT8_SUFFIXES[1]
        graph.initializer.extend([numpy_helper.from_array(q, q_name), numpy_helper.from_array(scale, scale_name)])
        dequantize += [
            onnx.helper.make_node("Cast", [q_name], [name + "_float"], to=onnx.TensorProto.FLOAT),
            onnx.helper.make_node("Mul", [name + "_float", scale_name], [name]),
        ]
    nodes = dequantize + list(graph.node)  # the weights exist before anything reads them
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(proto, str(target))


def dequantize_weights(source: Path, target: Path) -> None:
    """The inverse of quantize_weights_int8: each int8 weight and its Cast + Mul replaced by the
    float32 weight they compute (dequantize_int8), so the file is the float32 graph carrying the
    int8 file's weights, computing what onnxruntime computes for the int8 file once it has folded
    them: benchmarks/generation.py's float32 row, without a second torch export."""
    proto = onnx.load(str(source))
    graph = proto.graph
    arrays = {i.name: i for i in graph.initializer}
    q_suffix, scale_suffix = INT8_SUFFIXES
    casts = [n for n in graph.node if n.op_type == "Cast" and n.input[0].endswith(q_suffix) and n.input[0] in arrays]
    for cast in casts:
        name = cast.input[0][: -len(q_suffix)]
        weight = dequantize_int8(
            numpy_helper.to_array(arrays[cast.input[0]]), numpy_helper.to_array(arrays[name + scale_suffix])
        )
        graph.initializer.remove(arrays.pop(cast.input[0]))
        graph.initializer.remove(arrays.pop(name + scale_suffix))
        graph.initializer.append(numpy_helper.from_array(weight, name))
    cast_outputs = {c.output[0] for c in casts}  # each read by its weight's Mul
    nodes = [
        n for n in graph.node if not (n.output[0] in cast_outputs or n.op_type == "Mul" and n.input[0] in cast_outputs)
    ]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(proto, str(target))


def set_metadata(path: Path, props: dict[str, str]) -> None:
    """Replace the model's metadata_props by `props`, and drop the exporter's per-node
    annotations (source stack traces: about a quarter of a small model's file)."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    onnx.save(model, str(path))


@dataclass
class Check:
    name: str
    batch: int | str
    length: int | str
    diff: float | None  # max |Δ logit|, or None for checks that are not a comparison
    ok: bool
    detail: str = ""


def verify(model: GPTLanguageModel, path: Path, prompt: list[int], text: np.ndarray) -> tuple[list[Check], list[int]]:
    """Compare the ONNX file with the PyTorch model: the onnx checker, prefills shorter and
    longer than the window, cached step-by-step decoding past the window, the end-of-text
    logit, a greedy continuation of `prompt` by the web app's engine (the plain loop), and,
    on `text` (validation ids), how the plain loop compares with an exact last window.
    Returns the checks and the continuation's ids (from onnxruntime)."""
    checks = []
    try:
        onnx.checker.check_model(str(path), full_check=True)
        checks.append(Check("onnx checker (full)", "-", "-", None, True))
    except onnx.checker.ValidationError as e:
        checks.append(Check("onnx checker (full)", "-", "-", None, False, str(e).splitlines()[0]))
    engine = Engine(path, device="cpu")  # the web app's own engine: what is verified is what serves
    cfg = model.config
    model = model.eval()
    rng = np.random.default_rng(0)
    beyond = 2 * cfg.block_size + 3  # a text that slides the window twice

    def reference(ids: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(ids))[0].numpy()

    def compare(name, batch, length, got, want):
        diff = float(np.abs(got - want).max())
        checks.append(Check(name, batch, length, diff, diff <= TOLERANCE))

    for batch in (1, 3):
        for length in sorted({1, 7, cfg.block_size, beyond}):
            ids = rng.integers(0, cfg.vocab_size, (batch, length))
            compare("prefill (empty cache)", batch, length, engine.forward(ids)[0], reference(ids))
        ids = rng.integers(0, cfg.vocab_size, (batch, beyond))
        want = reference(ids)
        past, steps = engine.empty_past(batch), []
        for t in range(beyond):
            logits, past = engine.forward(ids[:, t : t + 1], past)
            steps.append(logits)
        compare("decode one by one with cache", batch, beyond, np.concatenate(steps, axis=1), want)
        split = min(7, cfg.block_size - 1)
        first, past = engine.forward(ids[:, :split])
        rest = [first]
        for t in range(split, beyond):
            logits, past = engine.forward(ids[:, t : t + 1], past)
            rest.append(logits)
        compare(f"prefill {split}, then decode", batch, beyond, np.concatenate(rest, axis=1), want)

    feed = {INPUT_IDS: rng.integers(0, cfg.vocab_size, (2, 5)), **engine.empty_past(2)}
    end = engine.session.run([LOGITS], feed)[0][..., cfg.vocab_size :]
    checks.append(
        Check(
            "end-of-text logit",
            2,
            5,
            None,
            end.shape[-1] == 1 and bool(np.all(end == END_OF_TEXT_LOGIT)),
            f"{END_OF_TEXT_LOGIT:g} (id {cfg.vocab_size})",
        )
    )

    onnx_ids = [
        int(draw.ids[0]) for draw in engine.decode(prompt, SamplingParams(max_new_tokens=GREEDY_CHARS, temperature=0))
    ]
    torch_ids = torch.cat(list(model.generate_cached(torch.tensor([prompt]), GREEDY_CHARS, temperature=0)), dim=1)[
        0
    ].tolist()
    same = onnx_ids == torch_ids
    first_diff = next((i for i, (a, b) in enumerate(zip(onnx_ids, torch_ids)) if a != b), None)
    checks.append(
        Check(
            f"greedy {GREEDY_CHARS} characters (plain loop)",
            1,
            GREEDY_CHARS,
            None,
            same,
            "identical" if same else f"differs from character {first_diff}",
        )
    )

    ids = text[:PLAIN_LOOP_CHARS]
    if len(ids) > cfg.block_size:
        loop, count, longest = plain_loop_loss(engine, ids)
        exact = last_window_loss(engine, ids)
        ok = loop - exact <= PLAIN_LOOP_SLACK and longest <= cfg.block_size - 1
        checks.append(
            Check(
                f"plain loop vs last window, {len(ids):,} val chars",
                1,
                count,
                None,
                ok,
                f"{loop:.4f} vs {exact:.4f} nats/char, cache <= {longest}",
            )
        )
    else:  # nothing to compare: no prediction has a full window
        checks.append(
            Check(
                "plain loop vs last window",
                1,
                len(ids),
                None,
                True,
                f"not measured: the validation split has only {len(ids)} characters",
            )
        )
    return checks, onnx_ids


def verify_ring(model_path: Path, ring_file: Path) -> list[Check]:
    """Compare the ring file with the model file it belongs to (both on onnxruntime): logits of
    its steps against the plain loop's past the window twice, and the greedy text of each."""
    engine = Engine(model_path, ring=False)
    ring = RingStep(ring_file, engine, open_session(ring_file, **engine.session_args))
    steps = 2 * (ring.slots + 1) + 3
    diff = ring.verify(engine, steps)
    checks = [Check("ring step vs plain loop", 2, steps, diff, diff <= RING_TOLERANCE)]
    settings = SamplingParams(max_new_tokens=GREEDY_CHARS, temperature=0)
    plain = engine.complete("\n", settings)
    ringed = Engine(model_path, ring_file=ring_file, table=False)  # its steps run the ring file
    same = ringed.ring is not None and ringed.complete("\n", settings) == plain
    detail = "identical" if same else ringed.notice or "differs"
    checks.append(Check(f"ring step: greedy {GREEDY_CHARS} characters", 1, GREEDY_CHARS, None, same, detail))
    return checks


def verify_attention(model: GPTLanguageModel, model_file: Path, attention_file: Path) -> list[Check]:
    """Compare the attention file with PyTorch's weights (GPTLanguageModel.attention) for batch 1
    and 3: texts shorter and longer than the window from an empty cache, and the characters
    after a prefill by the model file (its cache, as the pages pass it); then that every row sums
    to 1 and gives nothing to positions before the text (later ones are outside the window)."""
    lm = OnnxModel(model_file)
    attention = AttentionFile(attention_file, lm, open_session(attention_file, **lm.session_args))
    cfg, model = model.config, model.eval()
    rng = np.random.default_rng(1)
    checks, rows, fresh = [], [], []  # every run's weights; those from an empty cache (position 0 first)

    def compare(name, batch, length, got, want):
        diff = float(np.abs(got - want).max())
        checks.append(Check(f"attention weights: {name}", batch, length, diff, diff <= TOLERANCE))
        rows.append(got)

    for batch in (1, 3):
        for length in sorted({1, 7, cfg.block_size, 2 * cfg.block_size + 3}):
            ids = rng.integers(0, cfg.vocab_size, (batch, length))
            with torch.no_grad():
                want = model.attention(torch.from_numpy(ids)).numpy()
            compare("from an empty cache", batch, length, attention.run(ids), want)
            fresh.append(rows[-1])
            if length > 1:
                split = length - min(3, length - 1)
                _, past = lm.forward(ids[:, :split])
                compare(
                    f"after a prefill of {split}",
                    batch,
                    length,
                    attention.run(ids[:, split:], past),
                    want[..., split:, :],
                )
    sums = max(float(np.abs(w.sum(-1) - 1).max()) for w in rows)
    window = cfg.block_size
    before = max(
        float(np.abs(w[..., t, : window - 1 - t]).max(initial=0))
        for w in fresh
        for t in range(min(w.shape[3], window - 1))
    )
    checks.append(
        Check(
            "attention rows sum to 1, none before the text",
            "-",
            "-",
            None,
            sums <= 1e-5 and before == 0,
            f"|sum - 1| <= {sums:.1e}, before: {before:g}",
        )
    )
    return checks


def checks_table(checks: list[Check]) -> str:
    rows = [("check", "batch", "length", "max |Δ logit|", "result")]
    for c in checks:
        diff = f"{c.diff:.2e}" if c.diff is not None else (c.detail or "-")
        rows.append((c.name, str(c.batch), str(c.length), diff, "ok" if c.ok else "FAIL"))
    return table(rows, markdown=False) + (
        f"\ntolerance: max |Δ logit| <= {TOLERANCE:g} (float32); the plain loop at most "
        f"{PLAIN_LOOP_SLACK} nats/char above the last window, its cache within the window"
    )

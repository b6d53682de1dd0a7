"""PyTorch -> ONNX with a KV cache: tracing, the weights named and quantized, the metadata, and the
PyTorch model back from a file's weights. The checks that decide whether a file is kept are in
verification.py."""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from train.model import GPTLanguageModel
from webapp.inference.attention import ATTENTIONS
from webapp.inference.onnx_model import INPUT_IDS, LOGITS, PAST, PRESENT, cache_names
from webapp.inference.ring import NEW, RING, RING_MASK, ROTARY_COS, ROTARY_SIN

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

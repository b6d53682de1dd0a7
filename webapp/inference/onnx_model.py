"""An exported chargpt model on onnxruntime: loading, its metadata, one forward call.

The one reader of the model folder's ONNX contract (docs/model-folder.md) in Python
(onnxruntime and numpy only). The web app's engine decodes with it, and `python -m export`
verifies and evaluates with it, so the code that serves a model is the code that was checked
against PyTorch. A model is a model folder (webapp.inference.model_folder) or a single .onnx
file with its NAME.json beside it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .model_folder import MODEL_FILE, ModelLoadError, check_configs, check_files, check_tokenizer

SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "models" / "chargpt"  # a model folder
# 2: the window is in the graph (a plain loop is correct at any length), the logits end with an
# end-of-text column, and the dimensions are named batch_size, sequence_length, past_sequence_length.
FORMAT_VERSION = "2"
METADATA_KEYS = ("chargpt.format", "vocab", "config", "training", "source_sha256")
OPTIONAL_KEYS = ("about",)  # what the pages say about the model (webapp/server/about.py); older exports lack it
PLAIN_STRING_KEYS = ("chargpt.format", "source_sha256")  # the others hold JSON
SIDECAR_SHA256 = "onnx_sha256"  # the JSON sidecar's record of the model file's own SHA-256
# The graph's names (docs/model-folder.md), as generation libraries expect them; export writes them from here.
INPUT_IDS, LOGITS = "input_ids", "logits"
PAST, PRESENT = "past_key_values.{i}.{kv}", "present.{i}.{kv}"


def beside(model_path: Path, suffix: str) -> Path:
    """A file that belongs to the model file NAME.onnx: NAME + suffix, in its folder."""
    return model_path.with_name(model_path.name[: -len(".onnx")] + suffix)


def cache_names(template: str, n_layer: int) -> list[str]:
    """PAST or PRESENT for every layer, key then value: the order of the graph's inputs/outputs."""
    return [template.format(i=i, kv=kv) for i in range(n_layer) for kv in ("key", "value")]


def parse_metadata(props: dict[str, str], source: str) -> dict:
    """A model's metadata_props as Python values; ModelLoadError if it is not a chargpt model."""
    missing = [k for k in METADATA_KEYS if k not in props]
    if missing:
        raise ModelLoadError(
            f"{source} is an ONNX file without chargpt metadata (no {', '.join(missing)}); export one "
            "with `python -m export RUN_DIR --out DIR/`, or use the shipped models/chargpt."
        )
    if props["chargpt.format"] != FORMAT_VERSION:
        older = props["chargpt.format"] == "1"
        raise ModelLoadError(
            f"{source} has chargpt format {props['chargpt.format']!r} and this version reads {FORMAT_VERSION!r}"
            + (
                " (format 1 keeps the window outside its graph); export its checkpoint again with "
                "`python -m export RUN_DIR --out DIR/`."
                if older
                else "; use the chargpt that exported it."
            )
        )
    try:
        present = [*METADATA_KEYS, *(k for k in OPTIONAL_KEYS if k in props)]
        return {k: props[k] if k in PLAIN_STRING_KEYS else json.loads(props[k]) for k in present}
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{source} has corrupt chargpt metadata ({e}).") from None


def check_against_sidecar(path: Path) -> None:
    """ModelLoadError if the JSON sidecar beside the model records a SHA-256 that the file does
    not have (a truncated or altered file would otherwise load, or fail somewhere deep inside)."""
    sidecar = path.with_suffix(".json")
    try:
        recorded = json.loads(sidecar.read_text(encoding="utf-8")).get(SIDECAR_SHA256)
    except (OSError, ValueError, AttributeError):
        return  # no sidecar, or not ours: the file is checked by loading it
    if recorded and hashlib.sha256(path.read_bytes()).hexdigest() != recorded:
        raise ModelLoadError(
            f"{path} does not match the SHA-256 recorded in {sidecar.name} beside it: the file was "
            "truncated or altered, or the JSON belongs to another export; export it again or restore both files."
        )


def choose_providers(device: str) -> tuple[list[str], str]:
    """onnxruntime providers for --device auto|cpu|cuda, and a notice when CUDA is unavailable."""
    import onnxruntime as ort

    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "cpu" or (device == "auto" and not has_cuda):
        return ["CPUExecutionProvider"], ""
    if device == "cuda" and not has_cuda:
        return ["CPUExecutionProvider"], "CUDA was asked for but this onnxruntime has no CUDA provider; running on CPU."
    return ["CUDAExecutionProvider", "CPUExecutionProvider"], ""


def open_session(path: Path, providers: list[str], threads: int | None, spinning: bool):
    """An onnxruntime session on `path`; raises onnxruntime's own exceptions."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if not spinning:  # spin between a run's operators, never after it returns
        options.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(str(path), options, providers=providers)


def first_line(error: Exception) -> str:
    """An error's first line, cut to 120 characters: enough to name the fault in a notice (its
    type's name when it says nothing)."""
    return (str(error).splitlines() or [type(error).__name__])[0][:120]


def graph_sizes(session) -> tuple[int, int, int, int]:
    """(layers, heads, head size, logit columns) as the graph declares them: its cache inputs
    [batch, heads, past, head size], two per layer, and its logits [batch, sequence, columns]."""
    past = [i for i in session.get_inputs() if i.name != INPUT_IDS]
    logits = next(o for o in session.get_outputs() if o.name == LOGITS)
    return len(past) // 2, past[0].shape[1], past[0].shape[3], logits.shape[2]


class OnnxModel:
    """path: a model folder or an .onnx file. threads: onnxruntime's intra-op threads (None:
    one per physical core, its default). spinning: whether those threads keep busy-waiting for
    work after a run returns (onnxruntime's default: lowest latency for runs back to back). The
    Engine turns that off, as the loop runs Python and other sessions between its runs, but keeps
    the spinning between a run's operators (`session.force_spinning_stop`): waking a thread for
    each of a step's operators costs more than the spinning (docs/speed.md)."""

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None, spinning: bool = True):
        folder = Path(path) if Path(path).is_dir() else None
        self.path = folder / MODEL_FILE if folder else Path(path)  # a folder's onnx/model.onnx, or the file
        if folder:
            check_files(folder)
        if not self.path.is_file():
            raise ModelLoadError(
                f"model {path} does not exist; use the shipped models/chargpt, or train and export "
                "one (see README: python -m train, then python -m export)."
            )
        check_against_sidecar(self.path)
        providers, self.notice = choose_providers(device)
        # How this model's sessions are opened (the engine opens its ring file the same way).
        self.session_args = dict(providers=providers, threads=threads, spinning=spinning)
        try:
            self.session = open_session(self.path, **self.session_args)
        except Exception as e:  # onnxruntime's own exception types
            raise ModelLoadError(
                f"{self.path} is not a readable ONNX model ({str(e).splitlines()[0][:160]})."
            ) from None
        self.provider = self.session.get_providers()[0]
        if device == "cuda" and self.provider != "CUDAExecutionProvider" and not self.notice:
            # get_providers() is the truth: a CUDA provider that failed to start does not raise.
            self.notice = "CUDA was asked for but could not be started; running on CPU."
        self.metadata = parse_metadata(dict(self.session.get_modelmeta().custom_metadata_map), str(self.path))
        config = self.metadata["config"]
        self.vocab: list[str] = self.metadata["vocab"]
        if folder:
            check_tokenizer(folder, self.vocab)
            check_configs(folder, *graph_sizes(self.session))
        self.block_size = config["block_size"]
        # A prompt's characters before its last receptive_field cannot change what comes next.
        self.receptive_field = config["receptive_field"]
        self.n_head, self.head_dim = config["n_head"], config["head_dim"]
        self.past_names = cache_names(PAST, config["n_layer"])
        self.output_names = [LOGITS, *cache_names(PRESENT, config["n_layer"])]

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        return {n: np.zeros((batch, self.n_head, 0, self.head_dim), np.float32) for n in self.past_names}

    def forward(
        self, ids: np.ndarray, past: dict[str, np.ndarray] | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """ids [B, T] following the cached characters (none when past is None) ->
        (logits [B, T, vocab], the cache of the window's last characters). The graph's last
        logit, the end-of-text id that generation libraries need, is left out: it is never
        sampled (export.onnx_export.END_OF_TEXT_LOGIT)."""
        if past is None:
            past = self.empty_past(ids.shape[0])
        logits, *presents = self.session.run(self.output_names, {INPUT_IDS: ids.astype(np.int64, copy=False), **past})
        return logits[..., : len(self.vocab)], dict(zip(self.past_names, presents))


class PlainSteps:
    """The step interface on the model file itself (docs/model-folder.md's graph, what every runtime runs):
    one character per row a step, the cache growing to the window and sliding with it.

    The interface, which RingStep (webapp/inference/ring.py) implements too:
      prefill(ids [B, T]) -> (the logits after each row's last id [B, vocab], state)
      forward(ids [B, T], state) -> (logits [B, T, vocab] after each id, uncommitted): T <= max_block
        ids that follow each row's text; the state is not changed
      commit(state, uncommitted, counts) -> the state after the first counts[b] of row b's ids (one
        number, or one per row): what the next forward reads
    A state is a dict of arrays and `uncommitted` a list of arrays, whose first axis is the batch, so
    rows stack, split and drop alike."""

    max_block = 1

    def __init__(self, model: OnnxModel):
        self.model = model

    def prefill(self, ids: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Only the last receptive_field characters can change what comes next: only those run."""
        logits, past = self.model.forward(ids[:, -self.model.receptive_field :])
        return logits[:, -1], past

    def forward(self, ids: np.ndarray, state: dict[str, np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        logits, present = self.model.forward(ids, state)
        return logits, list(present.values())

    def commit(self, state: dict[str, np.ndarray], uncommitted: list[np.ndarray], counts) -> dict[str, np.ndarray]:
        """The cache after the one id each row ran (a row that keeps none is being dropped)."""
        return dict(zip(self.model.past_names, uncommitted))

"""Where every head looked: an extra ONNX file beside the model that only chargpt reads
(`MODEL.attention.onnx`; other runtimes load the model file and never see it).

It takes what the model file takes (input_ids and the cache of the characters before them) and
returns `attentions` [batch, n_layer, n_head, sequence_length, block_size]: each new position's
attention probabilities over its window, its own character last
(`GPTLanguageModel.attention`). A file of its own rather than another output of the model
file, so that the graph every runtime runs stays as it is, and computing the weights costs
nothing until a view asks for them (docs/views.md). `python -m export` writes and checks it
against PyTorch; `python -m export attention DIR` adds it to a folder exported before it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .onnx_model import INPUT_IDS, OnnxModel, beside, first_line, open_session

ATTENTION_SUFFIX = ".attention.onnx"  # MODEL.onnx -> MODEL.attention.onnx
ATTENTIONS = "attentions"  # the file's output


def attention_path(model_path: Path) -> Path:
    return beside(model_path, ATTENTION_SUFFIX)


class AttentionFile:
    """The attention file's session, on the model whose cache it reads."""

    def __init__(self, path: Path, model: OnnxModel, session):
        self.path, self.model, self.session = path, model, session
        self.window = model.metadata["config"]["block_size"]

    def run(self, ids: np.ndarray, past: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """ids [B, T] after the characters `past` holds (the model file's cache; none when None)
        -> [B, n_layer, n_head, T, block_size]."""
        if past is None:
            past = self.model.empty_past(ids.shape[0])
        return self.session.run([ATTENTIONS], {INPUT_IDS: ids.astype(np.int64, copy=False), **past})[0]

    def last_position(self, ids: list[int]) -> np.ndarray:
        """Where each head looked from the text's last character, as the model read the text
        (the last receptive_field characters, as the engine's prefill does): [n_layer, n_head, n],
        the weights on its last n = min(len(ids), block_size) characters, oldest first."""
        ids = list(ids[-self.model.receptive_field :])
        past = self.model.forward(np.array([ids[:-1]], np.int64))[1] if len(ids) > 1 else None
        weights = self.run(np.array([ids[-1:]], np.int64), past)[0, :, :, 0]  # [L, H, W]
        return weights[..., self.window - min(len(ids), self.window) :]


def load_attention(model: OnnxModel) -> tuple[AttentionFile | None, str]:
    """The attention file beside `model`'s file, opened as the model's own session was:
    (AttentionFile, "") when it is there and made from the same model; (None, one sentence saying
    why there are no weights) otherwise."""
    path = attention_path(model.path)
    if not path.is_file():
        return None, (
            f"This model has no {path.name}: it was exported before chargpt showed attention, and "
            "`python -m export attention FOLDER` adds it to its folder."
        )
    try:
        session = open_session(path, **model.session_args)
    except Exception as e:  # onnxruntime's own exception types
        return None, f"{path.name} is not a readable ONNX model ({first_line(e)}); export the model again."
    source = dict(session.get_modelmeta().custom_metadata_map).get("source_sha256")
    outputs = {o.name for o in session.get_outputs()}
    if source != model.metadata["source_sha256"] or ATTENTIONS not in outputs:
        return None, f"{path.name} was not exported with {model.path.name}; export the model again."
    return AttentionFile(path, model, session), ""

"""An exported model run by onnxruntime alone (numpy, no torch): the reference decoder used to
verify exports and to measure a model file's validation loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .metadata import ModelFileError, from_props


class OnnxLM:
    def __init__(self, path: str | Path, providers=("CPUExecutionProvider",)):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"{path} does not exist; give the path of an exported .onnx model.")
        try:
            self.session = ort.InferenceSession(str(path), providers=list(providers))
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise ModelFileError(f"{path} is not a readable ONNX model ({str(e).splitlines()[0][:200]}).") from None
        self.metadata = from_props(dict(self.session.get_modelmeta().custom_metadata_map), str(path))
        config = self.metadata["config"]
        self.vocab: list[str] = self.metadata["vocab"]
        self.block_size, self.n_layer = config["block_size"], config["n_layer"]
        self.n_head, self.head_dim = config["n_head"], config["head_dim"]
        self.past_names = [f"past_key_values.{i}.{kv}" for i in range(self.n_layer) for kv in ("key", "value")]
        self.output_names = ["logits"] + [n.replace("past_key_values", "present") for n in self.past_names]

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        return {n: np.zeros((batch, self.n_head, 0, self.head_dim), np.float32) for n in self.past_names}

    def forward(self, ids: np.ndarray, past: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """ids [B, T] after the cached positions -> (logits [B, T, vocab], the cache including them)."""
        logits, *presents = self.session.run(self.output_names, {"input_ids": ids.astype(np.int64), **past})
        return logits, dict(zip(self.past_names, presents))

    def greedy(self, prompt: list[int], n: int) -> list[int]:
        """n greedy ids after the prompt, each predicted from at most the last block_size ids
        (the seed's `generate` at temperature 0): the cache grows until the window is full,
        then every step recomputes the last block_size ids."""
        ids = list(prompt)
        logits, past = self.forward(np.array([ids[-self.block_size :]]), self.empty_past(1))
        out = []
        for _ in range(n):
            next_id = int(logits[0, -1].argmax())
            out.append(next_id)
            ids.append(next_id)
            if len(ids) <= self.block_size:
                logits, past = self.forward(np.array([[next_id]]), past)
            else:
                logits, past = self.forward(np.array([ids[-self.block_size :]]), self.empty_past(1))
        return out

    def split_loss(self, ids: np.ndarray, windows: list[tuple[int, int]], batch_size: int = 64) -> float:
        """Mean cross-entropy (nats per character) of the predictions in `windows` over `ids`."""
        total, count = 0.0, 0
        for i in range(0, len(windows), batch_size):
            group = windows[i : i + batch_size]
            for length in sorted({n for _, n in group}, reverse=True):
                starts = np.array([s for s, n in group if n == length])
                positions = starts[:, None] + np.arange(length)
                logits, _ = self.forward(ids[positions], self.empty_past(len(starts)))
                total -= log_softmax_at(logits, ids[positions + 1]).sum()
                count += positions.size
        return total / count


def log_softmax_at(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """log p(target) under softmax(logits) along the last axis, computed in float64."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=-1))
    return np.take_along_axis(z, targets[..., None], axis=-1)[..., 0] - log_norm


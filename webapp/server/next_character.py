"""/inspect: the model's distribution for the character after a text, before and after the
sampling rules, and where each head looked as it was computed, with no generation
(docs/views.md). The page's chart and attention view draw it as its settings move; API callers
get it as JSON."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from webapp.inference.attention import load_attention
from webapp.inference.engine import Engine, encode_prompt
from webapp.inference.sampling import SamplingParams, likeliest_first, sampling_distribution, softmax

CACHED_TEXTS = 256  # texts whose logits are kept: a setting moved on the page asks again for the same text


def distribution(logits: np.ndarray, params: SamplingParams, vocab: list[str]) -> dict[str, dict[str, float]]:
    """The next character's distribution from its logits [vocab]: `before` the sampling rules (the
    model's own, temperature 1) and `after` them (what a draw with `params` is made from: only
    the characters they keep), each from characters to probabilities, the likeliest first."""
    order = likeliest_first(logits).tolist()
    before, after = softmax(logits[None])[0], sampling_distribution(logits[None], [params])[0]
    return {
        "before": {vocab[i]: float(before[i]) for i in order},
        "after": {vocab[i]: float(after[i]) for i in order if after[i] > 0},
    }


def heads(weights: np.ndarray | None, characters: str) -> dict | None:
    """The attention file's weights [n_layer, n_head, n] as JSON: the n characters they are on
    (the text's last, oldest first) and one entry per layer and head."""
    if weights is None:
        return None
    return {
        "characters": list(characters[len(characters) - weights.shape[-1] :]),
        "heads": [
            {"layer": layer, "head": head, "weights": row.tolist()}
            for layer, per_head in enumerate(weights)
            for head, row in enumerate(per_head)
        ],
    }


class NextCharacter:
    """What /inspect answers for a text, on the server's engine (thread-safe). The weights come
    from the model's attention file (webapp/inference/attention.py); a model without one answers
    `attention: null` and says why in `attention_notice`."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.attention, self.attention_notice = load_attention(engine)
        self.lock = threading.Lock()
        self.cache: OrderedDict[tuple[int, ...], tuple[np.ndarray, np.ndarray | None]] = OrderedDict()

    def forward(self, ids: list[int]) -> tuple[np.ndarray, np.ndarray | None]:
        """The next character's logits [vocab] after `ids`, and the attention weights from the
        last of them (None without an attention file)."""
        key = tuple(ids[-self.engine.receptive_field :])  # all that can change what comes next
        with self.lock:
            if key in self.cache:
                self.cache.move_to_end(key)
                return self.cache[key]
        found = self.engine.next_logits(list(key)), self.attention.last_position(list(key)) if self.attention else None
        with self.lock:
            self.cache[key] = found
            while len(self.cache) > CACHED_TEXTS:
                self.cache.popitem(last=False)
        return found

    def __call__(self, text: str, params: SamplingParams) -> dict:
        """{context: the characters the model read, notice: what was replaced or dropped (as
        /generate's stats line says it), before, after (`distribution`), attention (`heads`),
        attention_notice (why there is none, or "")}."""
        encoded = encode_prompt(text, self.engine.vocab)
        context = encoded.text[-self.engine.receptive_field :]
        logits, weights = self.forward(encoded.ids)
        return {
            "context": context,
            "notice": encoded.notice(),
            **distribution(logits, params, self.engine.vocab),
            "attention": heads(weights, context),
            "attention_notice": self.attention_notice,
        }

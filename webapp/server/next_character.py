"""/inspect: the model's distribution for the character after a text, before and after the
sampling rules, from one forward and no generation (docs/views.md). The page's chart draws it
as its settings move; API callers get it as JSON."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from webapp.inference.engine import Engine, encode_prompt
from webapp.inference.sampling import SamplingParams, likeliest_first, sampling_distribution, softmax

CACHED_TEXTS = 256  # texts whose logits are kept: a setting moved on the page asks again for the same text


def distribution(logits: np.ndarray, params: SamplingParams, vocab: list[str]) -> dict[str, dict[str, float]]:
    """The next character's distribution from its logits [vocab]: `before` the sampling rules (the
    model's own, temperature 1) and `after` them (what a draw with `params` is made from: only
    the characters they keep), each from characters to probabilities, the likeliest first."""
    order = likeliest_first(logits).tolist()
    before, after = softmax(logits[None])[0], sampling_distribution(logits[None], [params])[0]
    return {"before": {vocab[i]: float(before[i]) for i in order},
            "after": {vocab[i]: float(after[i]) for i in order if after[i] > 0}}


class NextCharacter:
    """What /inspect answers for a text, on the server's engine (thread-safe)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.lock = threading.Lock()
        self.cache: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()

    def logits(self, ids: list[int]) -> np.ndarray:
        key = tuple(ids[-self.engine.receptive_field :])  # all that can change what comes next
        with self.lock:
            if key in self.cache:
                self.cache.move_to_end(key)
                return self.cache[key]
        logits = self.engine.next_logits(list(key))
        with self.lock:
            self.cache[key] = logits
            while len(self.cache) > CACHED_TEXTS:
                self.cache.popitem(last=False)
        return logits

    def __call__(self, text: str, params: SamplingParams) -> dict:
        """{context: the characters the model read, notice: what was replaced or dropped (as
        /generate's stats line says it), before, after (`distribution`)}."""
        encoded = encode_prompt(text, self.engine.vocab)
        context = encoded.text[-self.engine.receptive_field :]
        return {"context": context, "notice": encoded.notice(),
                **distribution(self.logits(encoded.ids), params, self.engine.vocab)}

"""chargpt's fast cached step: an extra ONNX file beside the model, that only chargpt's engine and
pages read (other runtimes load the model file and never see it).

The model file (docs/model-folder.md's graph, what every runtime runs) keeps its cache as the window's
keys *before* rotation and values, and at every step concatenates the new ones, rotates all
keys by their place in the window and slices the window back out: about ten passes over the
cache per layer and step, most of a step's time, and all of it again for each row of a batch.

The ring file (`MODEL.ring.onnx`, written by `python -m export` for rotary models) computes the
same function with a cache the engine owns (`GPTLanguageModel.step_ring`): per layer, the keys
of the row's last block_size - 1 characters rotated at their own positions, and their values,
in a ring of slots (position % (block_size - 1)); a mask marks empty slots. The graph only reads
the ring and returns the new characters' keys and values, which the engine writes into the slots
of the characters that leave the window. A step takes T characters a row (one while decoding;
more when the engine checks a draft, webapp/inference/drafting.py), each seeing the ring less the slots
its window has left, and the new ones up to itself (`ring_mask`). Rotary attention depends
only on the distance between positions, and softmax-weighted sums on no order, so the slots
need no shifting; angles are computed here in float64 from whole positions, so texts of any
length keep their precision. Against the model file's cached step it does a fraction of the
work per step (docs/speed.md has the figures).

RingStep is the step interface (webapp/inference/onnx_model.py, PlainSteps, says what it is) on
this file. A prefill still runs the model file; its cache is rotated into a ring
(`RingStep.state`). The engine loads the ring file only when its metadata matches the model's and
a short run of both agrees within RING_TOLERANCE (`RingStep.verify`); otherwise it steps with the
model file.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from .onnx_model import INPUT_IDS, LOGITS, OnnxModel, beside, cache_names, first_line, open_session

RING_SUFFIX = ".ring.onnx"  # MODEL.onnx -> MODEL.ring.onnx
ROTARY_COS, ROTARY_SIN, RING_MASK = "rotary_cos", "rotary_sin", "ring_mask"
RING, NEW = "ring.{i}.{kv}", "new.{i}.{kv}"
POSITION = "position"  # in a ring state: each row's next position (not a graph input)
RING_TOLERANCE = 1e-4  # max |logit difference| between the ring step and the model file's plain loop
# Positions whose rotary tables a RingStep keeps (2 MB for head_dim 32): the server's texts stay
# below receptive_field + MAX_NEW_TOKENS; a longer one computes its tables at each step.
TABLE_POSITIONS = 8192
VERIFY_CHUNK = 4  # characters per step in every other step of `verify`


def ring_path(model_path: Path) -> Path:
    return beside(model_path, RING_SUFFIX)


def rotary_tables(positions: np.ndarray, head_dim: int, base: float) -> tuple[np.ndarray, np.ndarray]:
    """cos and signed sin [..., head_dim] at whole positions [...], as train.model.rotary_tables lays
    them out (the half-size angles twice, the sine negated in the first half), computed in
    float64 and rounded once: within float32 rounding of the true values at any position."""
    frequencies = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles = positions.astype(np.float64)[..., None] * frequencies
    cos, sin = np.cos(angles), np.sin(angles)
    return (
        np.concatenate((cos, cos), axis=-1).astype(np.float32),
        np.concatenate((-sin, sin), axis=-1).astype(np.float32),
    )


def rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """train.model.apply_rotary in numpy: x [..., L, D] rotated by the tables [L, D]."""
    x1, x2 = np.split(x, 2, axis=-1)
    return x * cos + np.concatenate((x2, x1), axis=-1) * sin


def ring_mask(filled: np.ndarray, positions: np.ndarray, new: int) -> np.ndarray:
    """The ring file's ring_mask for `new` positions per row: [B, new, slots + new], additive.
    Row b's new position j (at positions[b] + j) sees the ring's filled slots (`filled`
    [B, slots]: 0, or -inf where empty) but the j oldest, which its window has left (positions
    positions[b] - slots + m for m < j, in slots (positions[b] + m) % slots), and the new
    positions up to its own."""
    batch, slots = filled.shape
    age = (
        np.arange(slots) - positions[:, None]
    ) % slots  # [B, slots]: m for the slot of position positions[b] - slots + m
    left = age[:, None, :] < np.arange(new)[None, :, None]  # [B, new, slots]
    later = np.arange(new)[None, :] > np.arange(new)[:, None]  # [new, new]
    return np.concatenate(
        (
            np.where(left, -np.inf, filled[:, None, :]),
            np.broadcast_to(np.where(later, -np.inf, 0.0), (batch, new, new)),
        ),
        axis=-1,
    ).astype(np.float32)


class RingStep:
    """The ring file's session and the ring states it steps: the step interface of PlainSteps,
    T <= slots characters per row a step. A state holds the ring of each layer, each row's mask
    and next position."""

    def __init__(self, path: Path, model: OnnxModel, session):
        self.path, self.session, self.model = path, session, model
        config = model.metadata["config"]
        self.n_layer, self.n_head, self.head_dim = config["n_layer"], config["n_head"], config["head_dim"]
        self.slots = self.max_block = config["block_size"] - 1
        self.rope_base = config["rope_base"]
        self.vocab_size = len(model.vocab)
        self.ring_names = cache_names(RING, self.n_layer)
        self.output_names = [LOGITS, *cache_names(NEW, self.n_layer)]
        self.cos = self.sin = np.zeros((0, self.head_dim), np.float32)  # the tables so far (tables_at)

    def tables_at(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """rotary_tables(positions), from tables computed once for the first TABLE_POSITIONS
        positions: a step then indexes them instead of computing cosines. Past them, computed as
        asked, so memory stays bounded at any length. Filling the tables is safe under threads:
        both hold the same values."""
        if len(positions) == 0 or positions.max() < len(self.cos):
            return self.cos[positions], self.sin[positions]
        if positions.max() >= TABLE_POSITIONS:
            return rotary_tables(positions, self.head_dim, self.rope_base)
        self.cos, self.sin = rotary_tables(np.arange(TABLE_POSITIONS), self.head_dim, self.rope_base)
        return self.cos[positions], self.sin[positions]

    def prefill(self, ids: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The model file's prefill of the last receptive_field characters, its cache rotated into a ring."""
        ids = ids[:, -self.model.receptive_field :]
        logits, past = self.model.forward(ids)
        return logits[:, -1], self.state(past, ids.shape[1])

    def state(self, past: dict[str, np.ndarray], length: int) -> dict[str, np.ndarray]:
        """The ring state after a prefill of `length` characters whose cache (the model file's
        `present`s, keys not rotated) is `past`: its keys rotated at their positions."""
        caches = list(past.values())
        batch, kept = caches[0].shape[0], caches[0].shape[2]
        positions = np.arange(length - kept, length)
        slots = positions % self.slots
        cos, sin = self.tables_at(positions)
        state = {}
        for name, cache, is_key in zip(self.ring_names, caches, [True, False] * self.n_layer):
            ring = np.zeros((batch, self.n_head, self.slots, self.head_dim), np.float32)
            ring[:, :, slots] = rotate(cache, cos, sin) if is_key else cache
            state[name] = ring
        mask = np.full((batch, self.slots), -np.inf, np.float32)
        mask[:, slots] = 0.0
        state[RING_MASK] = mask
        state[POSITION] = np.full(batch, length, np.int64)
        return state

    def forward(self, ids: np.ndarray, state: dict[str, np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """ids [B, T] that follow each row's text, T <= slots: (logits [B, T, vocab] after each,
        their keys and values per layer [B, H, T, D]), the state untouched (`commit` adds them)."""
        positions = state[POSITION]
        cos, sin = self.tables_at(positions[:, None] + np.arange(ids.shape[1]))
        feed = {
            INPUT_IDS: ids.astype(np.int64, copy=False),
            ROTARY_COS: cos,
            ROTARY_SIN: sin,
            RING_MASK: ring_mask(state[RING_MASK], positions, ids.shape[1]),
            **{n: state[n] for n in self.ring_names},
        }
        logits, *new = self.session.run(self.output_names, feed)
        return logits[..., : self.vocab_size], new

    def commit(
        self, state: dict[str, np.ndarray], new: list[np.ndarray], counts: int | np.ndarray
    ) -> dict[str, np.ndarray]:
        """Write the first `counts` positions (one number, or one per row) of a `forward`'s keys and
        values into each row's ring, in the slots of the characters that leave its window; the
        state, updated in place."""
        positions = state[POSITION]
        counts = np.broadcast_to(np.asarray(counts, np.int64), positions.shape)
        count, first = int(counts[0]), int(positions[0] % self.slots)
        if (positions == positions[0]).all() and (counts == count).all() and first + count <= self.slots:
            # Rows at one position keeping as many (one request's samples, a crowd that started
            # together), slots not wrapping: plain slices, a copy per array instead of a gather.
            for name, value in zip(self.ring_names, new):
                state[name][:, :, first : first + count] = value[:, :, :count]
            state[RING_MASK][:, first : first + count] = 0.0
        else:
            rows = np.repeat(np.arange(len(positions)), counts)  # one (row, new position) pair per kept character
            new_positions = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
            slots = (positions[rows] + new_positions) % self.slots
            for name, value in zip(self.ring_names, new):
                state[name][rows, :, slots] = value[rows, :, new_positions]
            state[RING_MASK][rows, slots] = 0.0
        state[POSITION] = positions + counts
        return state

    def verify(self, model: OnnxModel, steps: int = 8) -> float:
        """The largest |logit difference| between this file's steps and the model file's plain
        loop, at batch 2, after a prefill that leaves the ring part-filled and one that fills it;
        the steps take one character and VERIFY_CHUNK characters in turn (as the engine's do)."""
        rng = np.random.default_rng(0)
        worst = 0.0
        for length in (5, self.slots + 13):
            ids = rng.integers(0, self.vocab_size, (2, length + steps))
            logits, past = model.forward(ids[:, :length])
            state = self.state(past, length)
            t, chunks = length, itertools.cycle((1, VERIFY_CHUNK))
            while t < length + steps:
                chunk = ids[:, t : t + next(chunks)]
                want, past = model.forward(chunk, past)
                got, new = self.forward(chunk, state)
                self.commit(state, new, chunk.shape[1])
                worst = max(worst, float(np.abs(got - want).max()))
                t += chunk.shape[1]
        return worst


def load_ring(model: OnnxModel, path: Path | None = None, **session_args) -> tuple[RingStep | None, str]:
    """The ring file at `path` (by default the one beside `model`'s file), checked: (RingStep, "")
    when it is there, made from the same model and agrees with it; (None, why not) otherwise (""
    when there is none)."""
    path = path or ring_path(model.path)
    if model.metadata["config"].get("position") != "rotary" or not path.is_file():
        return None, ""
    instead = f"decoding with {model.path.name}."
    try:
        session = open_session(path, **session_args)
    except Exception as e:  # onnxruntime's own exception types
        return None, f"{path.name} is not a readable ONNX model ({first_line(e)}); {instead}"
    mask_shape = next((i.shape for i in session.get_inputs() if i.name == RING_MASK), [])
    if len(mask_shape) == 2:  # ring_mask [B, slots]: one character a step
        return None, (
            f"{path.name} is an older ring file (one character a step); export the model again to write one that "
            f"also checks drafts; {instead}"
        )
    source = dict(session.get_modelmeta().custom_metadata_map).get("source_sha256")
    if source != model.metadata["source_sha256"]:
        return None, f"{path.name} was not exported with {model.path.name}; {instead}"
    ring = RingStep(path, model, session)
    try:
        diff = ring.verify(model)
    except Exception as e:
        return None, f"{path.name} does not run as a ring step ({first_line(e)}); {instead}"
    if not diff <= RING_TOLERANCE:
        return None, f"{path.name} disagrees with {model.path.name} (max |Δ logit| {diff:.1e}); {instead}"
    return ring, ""

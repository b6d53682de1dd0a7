"""What travels inside an exported model (ONNX metadata_props), its JSON sidecar and model card.

Built from a checkpoint's config.json. Reading it back is webapp/inference/onnx_model.py's job.
"""

from __future__ import annotations

import json

from train.model import GPTConfig
from webapp.inference.onnx_model import FORMAT_VERSION
from webapp.inference.phrases import averaged_phrase

ARCHITECTURE_KEYS = ("position", "activation", "norm", "bias", "tie_weights", "qk_norm", "mlp_ratio", "rope_base")


def build(meta: dict, num_params: int, val_loss: float | None, about: dict) -> dict:
    """The metadata of an export of the checkpoint described by `meta` (its config.json), with
    what the pages say about it (export/about.py)."""
    m, t = meta["model"], meta["train"]
    config = {k: m[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")}
    config["head_dim"] = m["n_embd"] // m["n_head"]
    # how many of a prompt's last characters a runtime needs to prefill (GPTConfig.receptive_field)
    config["receptive_field"] = GPTConfig.from_dict(m).receptive_field
    config.update({k: m[k] for k in ARCHITECTURE_KEYS})
    training = {
        "val_loss": val_loss,  # whole validation split, nats per character (docs/training.md)
        "step": meta["step"],
        "tokens_seen": meta.get("tokens_seen"),
        "dataset_sha256": meta["dataset"]["sha256"],
        "params": num_params,
        "elapsed_s": meta.get("elapsed_s"),
        "settings": t,
        "dropout": m["dropout"],
    }
    if meta.get("averaged_steps"):  # an average/ checkpoint, or python -m train.average's
        training["averaged_steps"] = meta["averaged_steps"]
    return {
        "chargpt.format": FORMAT_VERSION,
        "vocab": meta["vocab"],
        "config": config,
        "training": training,
        "source_sha256": meta["files"]["model.safetensors"],
        "about": about,
    }


def to_props(metadata: dict) -> dict[str, str]:
    """metadata_props values are strings: JSON for everything that is not one already."""
    return {k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in metadata.items()}


SAMPLE_HEADING = "## Greedy continuation of a newline (200 characters, from this ONNX file)"
VERIFICATION_HEADING = "## Verification against PyTorch"


class CardError(ValueError):
    """A card that model_card did not write (or that was edited out of its shape)."""


def card_parts(card: str) -> tuple[str, str]:
    """(sample, verification): what model_card was given, read back from the card it wrote (a
    sample may hold anything, fences included: it ends where the verification section begins)."""
    sample_opens, table_opens = f"\n{SAMPLE_HEADING}\n\n```\n", f"\n```\n\n{VERIFICATION_HEADING}\n\n```\n"
    sample_at = card.find(sample_opens)
    sample_end = card.find(table_opens, sample_at)
    if sample_at < 0 or sample_end < 0:
        raise CardError("its sample and verification sections are not as python -m export writes them")
    table_at = sample_end + len(table_opens)
    table_end = card.find("\n```\n", table_at)
    if table_end < 0:
        raise CardError("its verification section is not closed")
    return card[sample_at + len(sample_opens) : sample_end], card[table_at:table_end]


def training_phrase(t: dict) -> str:
    """The card's "trained" row: steps, characters, the settings that shaped the weights, and
    whether they are an average (SWA)."""
    s = t["settings"]
    steps = t.get("averaged_steps")
    averaged = f"; {averaged_phrase(steps)} (SWA)" if steps else ""
    return (
        f"{t['step']:,} steps, {t['tokens_seen'] or 0:,} characters, batch {s['batch_size']}, "
        f"learning rate {s['learning_rate']:g} ({s['lr_schedule']}), dropout {t['dropout']}, seed {s['seed']}{averaged}"
    )


def model_card(name: str, metadata: dict, file_bytes: int, sample: str, verification: str) -> str:
    c, t = metadata["config"], metadata["training"]
    val = f"{t['val_loss']:.4f}" if t["val_loss"] is not None else "not measured"
    arch = ", ".join(f"{k} {c[k]}" for k in ARCHITECTURE_KEYS)
    a = metadata["about"]
    examples = "\n".join(f"- `{json.dumps(e, ensure_ascii=False)}`" for e in a["examples"])
    trained = training_phrase(t)
    return f"""# {name}

{a["description"]}

A character-level GPT exported by chargpt (format {metadata["chargpt.format"]}), trained on {a["dataset"]}.

| | |
| --- | --- |
| parameters | {t["params"]:,} ({t["params"] / 1e6} M) |
| validation loss (whole split, nats/char) | {val} |
| file size | {file_bytes / 1e6:.2f} MB |
| layers / heads / width / context | {c["n_layer"]} / {c["n_head"]} / {c["n_embd"]} / {c["block_size"]} characters |
| vocabulary | {c["vocab_size"]} characters |
| architecture | {arch} |
| weights | {t.get("quantization") or "float32"} |
| trained | {trained} |
| dataset SHA-256 | `{t["dataset_sha256"]}` |
| source checkpoint SHA-256 | `{metadata["source_sha256"]}` |

Inputs: `input_ids` int64 [batch_size, sequence_length] and `past_key_values.{{i}}.key/value`
float32 [batch_size, {c["n_head"]}, past_sequence_length, {c["head_dim"]}] (length 0 for a fresh prompt). Outputs:
`logits` [batch_size, sequence_length, {c["vocab_size"] + 1}] (the {c["vocab_size"]} characters, then an end-of-text
id that is never predicted) and `present.{{i}}.key/value`. The window is in the graph: a plain
loop (prefill, then each `present` fed back as the next `past`) writes text of any length, and
the cache never holds more than the last {c["block_size"] - 1} characters. Only a prompt's last
{c["receptive_field"]} characters change what comes next. The vocabulary and this configuration are in the
file's metadata and in the JSON file beside it.

## On the page

`python -m webapp --model` and the static page (`webapp/web`) show this model as
"{a["title"]}", with the description above, and these example prompts (the first is the
default prompt):

{examples}

{SAMPLE_HEADING}

```
{sample}
```

{VERIFICATION_HEADING}

```
{verification}
```
"""

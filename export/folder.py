"""The files of a model folder (webapp/inference/model_folder.py has the layout) beside onnx/model.onnx:
configuration and tokenizer files for generation libraries, and the model card's front matter.

Pure functions of the model's metadata; export/cli.py writes what they return.

Ids: the characters are 0 .. V-1 (the model's vocabulary, in its order) and V is the end of
text, `<|endoftext|>`, which the graph's last logit column stands for (never predicted). It
serves as end, padding and start id, as in GPT-2. No real character can collide with it, and
onnxruntime-genai, which insists that its end id index the logits, never stops on it: a
character model writes until the length it is asked for.
"""

from __future__ import annotations

import json

from train.text import SHAKESPEARE_SHA256
from webapp.inference.model_folder import MODEL_FILE, byte_level
from webapp.inference.onnx_model import INPUT_IDS, LOGITS, PAST, PRESENT

END_OF_TEXT = "<|endoftext|>"
# Lengths are not capped by the model (the window is in the graph); tools want a number anyway.
UNBOUNDED = 1_000_000_000
GENAI_MAX_LENGTH = 2048  # onnxruntime-genai's default total length; its users set their own


def end_of_text_id(metadata: dict) -> int:
    return len(metadata["vocab"])


def tokenizer_json(vocab: list[str]) -> dict:
    """GPT-2's byte-level BPE over the character vocabulary: id i is vocab[i] spelled in the byte
    alphabet, and the merges rebuild each multi-byte character from its UTF-8 bytes (the
    pieces on the way get ids after the end-of-text id; they never survive a whole character).
    No normalizer and no splitting, so every tool gives exactly the model's ids."""
    ids = {byte_level(c.encode("utf-8")): i for i, c in enumerate(vocab)}
    ids[END_OF_TEXT] = len(vocab)
    merges = {}  # in order, once each (a dict keeps insertion order)
    for c in vocab:
        data = c.encode("utf-8")
        for n in range(1, len(data)):
            left, right = byte_level(data[:n]), byte_level(data[n : n + 1])
            for piece in (left, right):
                ids.setdefault(piece, len(ids))
            merges[f"{left} {right}"] = None
    byte_level_options = {"add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": len(vocab),
                "content": END_OF_TEXT,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", **byte_level_options},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", **byte_level_options},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": ids,
            "merges": list(merges),
        },
    }


def tokenizer_config() -> dict:
    return {
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": UNBOUNDED,
        "bos_token": END_OF_TEXT,
        "eos_token": END_OF_TEXT,
        "pad_token": END_OF_TEXT,
        "unk_token": None,
        "add_bos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
    }


def config_json(metadata: dict) -> dict:
    """What transformers.js reads: model_type gpt2 (its cache shapes come from n_head, n_embd
    and n_layer), the ids, and fp32 as the default weights (the only file in the folder)."""
    c, end = metadata["config"], end_of_text_id(metadata)
    return {
        "model_type": "gpt2",
        "n_layer": c["n_layer"],
        "n_head": c["n_head"],
        "n_embd": c["n_embd"],
        "vocab_size": end + 1,
        "bos_token_id": end,
        "eos_token_id": end,
        "pad_token_id": end,
        "chargpt": {
            "format": metadata["chargpt.format"],
            "block_size": c["block_size"],
            "receptive_field": c["receptive_field"],
            "position": c["position"],
        },
        "transformers.js_config": {"dtype": "fp32", "use_external_data_format": False},
    }


def generation_config(metadata: dict) -> dict:
    end = end_of_text_id(metadata)
    return {"bos_token_id": end, "eos_token_id": end, "pad_token_id": end}


def genai_config(metadata: dict) -> dict:
    """onnxruntime-genai's configuration: the graph's inputs and outputs by name, its sizes,
    and a context length that does not bind (the graph keeps its own window).

    onnxruntime-genai allocates each `present` before the run, as long as the text so far,
    unless a sliding window caps it: then min(text so far, window_size + cache_slack). The
    graph returns min(text so far, block_size - 1), hence window_size block_size - 2 and a
    slack of 1 (0 would mean its default, 16). Models of block_size < 3 cannot say it."""
    c, end = metadata["config"], end_of_text_id(metadata)
    return {
        "model": {
            "type": "decoder",  # onnxruntime-genai's generic decoder-only model
            "bos_token_id": end,
            "eos_token_id": end,
            "pad_token_id": end,
            "vocab_size": end + 1,
            "context_length": UNBOUNDED,
            "decoder": {
                "filename": MODEL_FILE.as_posix(),
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "head_size": c["head_dim"],
                "hidden_size": c["n_embd"],
                "num_attention_heads": c["n_head"],
                "num_key_value_heads": c["n_head"],
                "num_hidden_layers": c["n_layer"],
                "inputs": {
                    "input_ids": INPUT_IDS,
                    "past_key_names": PAST.format(i="%d", kv="key"),
                    "past_value_names": PAST.format(i="%d", kv="value"),
                },
                "outputs": {
                    "logits": LOGITS,
                    "present_key_names": PRESENT.format(i="%d", kv="key"),
                    "present_value_names": PRESENT.format(i="%d", kv="value"),
                },
                "sliding_window": {
                    "window_size": max(c["block_size"] - 2, 1),
                    "cache_slack": 1,
                    "layers": list(range(c["n_layer"])),
                    "slide_key_value_cache": False,
                    "slide_inputs": False,
                },
            },
        },
        "search": {
            "max_length": GENAI_MAX_LENGTH,
            "min_length": 0,
            "do_sample": False,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": False,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
            "repetition_penalty": 1.0,
        },
    }


def config_files(metadata: dict) -> dict[str, dict]:
    """Every JSON file of the folder but the metadata, by its name in the folder."""
    return {
        "config.json": config_json(metadata),
        "generation_config.json": generation_config(metadata),
        "tokenizer.json": tokenizer_json(metadata["vocab"]),
        "tokenizer_config.json": tokenizer_config(),
        "genai_config.json": genai_config(metadata),
    }


def front_matter(name: str, metadata: dict, license: str) -> str:
    """The Hub's YAML metadata of the model card (JSON strings are YAML scalars)."""
    t = metadata["training"]
    shakespeare = t["dataset_sha256"] == SHAKESPEARE_SHA256
    lines = [
        "---",
        f"license: {license}",
        "pipeline_tag: text-generation",
        "library_name: transformers.js",
        "tags:",
        *(f"- {tag}" for tag in ("chargpt", "character-level", "onnx", "onnxruntime-genai", "gpt")),
    ]
    if shakespeare:
        lines += ["datasets:", "- karpathy/tiny_shakespeare"]
    dataset_name = metadata["about"]["dataset"]
    if t["val_loss"] is not None:
        lines += [
            "model-index:",
            f"- name: {json.dumps(name)}",
            "  results:",
            "  - task:",
            "      type: text-generation",
            "      name: Character-level language modelling",
            "    dataset:",
            f"      name: {json.dumps(dataset_name + ', validation split (last 10%)')}",
            f"      type: {'karpathy/tiny_shakespeare' if shakespeare else 'text'}",
            "      split: validation",
            "    metrics:",
            "    - type: loss",
            f"      value: {round(t['val_loss'], 4)}",
            "      name: Validation loss (whole split, nats per character)",
        ]
    return "\n".join([*lines, "---", ""])


# How other programs run a folder: the README shows these verbatim, tests/test_runtimes.py runs
# them, and each model card shows them with its own folder name and prompt.
TRANSFORMERS_JS = """\
import { env, pipeline } from "@huggingface/transformers";

env.localModelPath = ".";  // model ids are folders under this one
env.allowRemoteModels = false;
const generator = await pipeline("text-generation", "models/chargpt");
const [{ generated_text }] = await generator("ROMEO:", { max_new_tokens: 300, do_sample: false });
console.log(generated_text);
"""

TRANSFORMERS_JS_PAGE = """\
<script type="module">
import { env, pipeline } from "https://cdn.jsdelivr.net/npm/@huggingface/transformers@4.3.1";

env.localModelPath = "./";  // model ids are folders beside this page
env.allowLocalModels = true;
env.allowRemoteModels = false;
const generator = await pipeline("text-generation", "models/chargpt");
const [{ generated_text }] = await generator("ROMEO:", { max_new_tokens: 300, do_sample: false });
document.body.textContent = generated_text;
</script>
"""

ONNXRUNTIME_GENAI = """\
import onnxruntime_genai as og

model = og.Model("models/chargpt")
tokenizer = og.Tokenizer(model)
prompt = tokenizer.encode("ROMEO:")
params = og.GeneratorParams(model)  # greedy, as genai_config.json says
params.set_search_options(max_length=len(prompt) + 300, min_length=len(prompt) + 300)
generator = og.Generator(model, params)
generator.append_tokens(prompt)
while not generator.is_done():
    generator.generate_next_token()
print(tokenizer.decode(generator.get_sequence(0)))
"""

OPTIMUM = """\
from optimum.onnxruntime import ORTModelForCausalLM
from transformers import AutoTokenizer

model = ORTModelForCausalLM.from_pretrained("models/chargpt")  # reads onnx/model.onnx
tokenizer = AutoTokenizer.from_pretrained("models/chargpt")
inputs = tokenizer("ROMEO:", return_tensors="pt")
output = model.generate(**inputs, max_new_tokens=300, do_sample=False)
print(tokenizer.decode(output[0]))
"""


def with_model(snippet: str, folder: str, prompt: str) -> str:
    """A snippet for another folder and prompt."""
    return snippet.replace('"models/chargpt"', json.dumps(folder)).replace(
        '"ROMEO:"', json.dumps(prompt, ensure_ascii=False)
    )


def usage(name: str, prompt: str, end_id: int) -> str:
    """The card's section on running the folder with the tools that read it."""
    return f"""
## Use it

The folder is what generation libraries load. The window is inside the graph, so their plain
loop writes text of any length; ask for as many characters as you like.

transformers.js in Node, from the folder that holds `{name}/`:

```js
{with_model(TRANSFORMERS_JS, name, prompt)}```

onnxruntime-genai in Python (its C#, Java and C APIs load the same folder):

```python
{with_model(ONNXRUNTIME_GENAI, name, prompt)}```

optimum with transformers' `generate()` (`pip install "optimum-onnx[onnxruntime]"`):

```python
{with_model(OPTIMUM, name, prompt)}```

`min_length` keeps the end-of-text id ({end_id}, never predicted: not a character) from being
considered at all. OpenVINO runs the same plain loop on `onnx/model.onnx`; for the engine's text,
ask it for float32: `compile_model(path, "CPU", {{"INFERENCE_PRECISION_HINT": "f32",
"DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}})`. On a CPU with bfloat16 instructions its defaults compute
in bfloat16 and round the activations to int8, and greedy text soon leaves the engine's.
chargpt's own web app serves the folder too: `python -m webapp --model {name}`.
It steps with `onnx/model.ring.onnx` when the folder has one (rotary models): the same function
with a cache the engine keeps in place, checked against `onnx/model.onnx` above and again when it
loads; other tools load `onnx/model.onnx` and never read it. Each such step also checks characters
drafted from the text's own repeats and from `onnx/model.drafts.json`, when the folder has one (the
training text's most frequent continuations of up to 5 characters): the same text, in fewer steps.
`onnx/model.attention.onnx` gives its pages and `/inspect` where every head looked, checked against
PyTorch above; no other tool reads it either.
"""

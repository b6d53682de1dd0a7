// webapp/inference/model_folder.py's twin: where a model's files are, and the checks that its
// configuration files agree with its graph.

/** The files of a model: a folder's onnx/model.onnx and onnx/model.json, or NAME.onnx and the
 * NAME.json beside it (paths or URLs, with "/" separators), and the ring file, draft table and
 * attention file that may be beside it (NAME.ring.onnx and NAME.drafts.json, rotary models:
 * webapp/inference/ring.py, webapp/inference/drafting.py; NAME.attention.onnx:
 * webapp/inference/attention.py). */
export function modelFiles(model) {
  const folder = model.replace(/\/+$/, "");
  const onnx = model.endsWith(".onnx") ? model : `${folder}/onnx/model.onnx`;
  const beside = (suffix) => onnx.replace(/\.onnx$/, suffix);
  return {
    onnx,
    meta: beside(".json"),
    ring: beside(".ring.onnx"),
    drafts: beside(".drafts.json"),
    attention: beside(".attention.onnx"),
  };
}

/** The configuration files of a model folder, beside its onnx/ (modelFiles says where a folder is). */
export const CONFIG_FILES = ["config.json", "generation_config.json", "genai_config.json"];

/** A model folder whose files disagree with each other (ModelLoadError in Python); the message is one sentence. */
export class ModelFolderError extends Error {}

/** webapp/inference/model_folder.py's config_fields: what each configuration file must say about
 * the graph, by file and dotted key (the sizes libraries build caches and logits from, and the
 * special ids, the graph's last logit column). */
export function configFields(nLayer, nHead, headDim, vocabSize) {
  const end = vocabSize - 1;
  const ids = { bos_token_id: end, eos_token_id: end, pad_token_id: end };
  return {
    "config.json": { n_layer: nLayer, n_head: nHead, n_embd: nHead * headDim, vocab_size: vocabSize, ...ids },
    "generation_config.json": ids,
    "genai_config.json": {
      "model.vocab_size": vocabSize,
      "model.bos_token_id": end,
      "model.eos_token_id": end,
      "model.pad_token_id": end,
      "model.decoder.num_hidden_layers": nLayer,
      "model.decoder.num_attention_heads": nHead,
      "model.decoder.num_key_value_heads": nHead,
      "model.decoder.head_size": headDim,
      "model.decoder.hidden_size": nHead * headDim,
    },
  };
}

/** model_folder.check_configs: the sentence naming the first configuration file and field that
 * disagree with the graph's sizes, or null. configs: each file's name -> its parsed JSON (null
 * when it is not JSON); folder: the folder's path, as the sentence names it. */
export function configDisagreement(folder, configs, sizes) {
  for (const [name, fields] of Object.entries(configFields(...sizes))) {
    const path = `${folder}/${name}`;
    if (configs[name] === null || typeof configs[name] !== "object")
      return `${path} is not readable JSON; export the folder again.`;
    for (const [key, want] of Object.entries(fields)) {
      let got = configs[name];
      for (const part of key.split("."))
        got = got !== null && typeof got === "object" && !Array.isArray(got) ? got[part] : undefined;
      if (got !== want)
        return (
          `${path} disagrees with the model's graph: ${key} is ${got === undefined ? "null" : pyJson(got)} there and ${want} in ` +
          "the graph; export the folder again so that all its files come from one checkpoint."
        );
    }
  }
  return null;
}

/** JSON as Python's json.dumps writes it (", " and ": " between items), for sentences both languages share. */
function pyJson(value) {
  return JSON.stringify(value, null, 1)
    .replace(/\n\s*/g, " ")
    .replace(/\[ /g, "[")
    .replace(/ \]/g, "]")
    .replace(/\{ /g, "{")
    .replace(/ \}/g, "}");
}

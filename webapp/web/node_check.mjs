// node node_check.mjs [MODEL] [--prompt TEXT] [--chars N] [--temperature T] [--top-k K]
//                    [--top-p P] [--min-p P] [--seed S] [--json]
// Loads an exported chargpt model (a model folder, or NAME.onnx with its NAME.json) with
// onnxruntime-node, prints the logits of the prompt's last position and a continuation (greedy
// unless --temperature > 0). The prompt defaults to the model's own default prompt.
// --json prints everything as JSON: what tests/test_web.py compares with Python's onnxruntime.
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { CharGPT, CONFIG_FILES, encodePrompt, Logits, ModelFolderError, modelFiles, readAbout } from "./chargpt.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const USAGE =
  "usage: node node_check.mjs [MODEL] [--prompt TEXT] [--chars N] [--temperature T] [--top-k K] [--top-p P] [--min-p P] [--seed S] [--json]";

function parseArgs(argv) {
  const opts = {
    model: path.join(here, "..", "..", "models", "chargpt"),
    prompt: undefined,
    chars: 200,
    temperature: 0,
    topK: 0,
    topP: 1,
    minP: 0,
    seed: 0,
    json: false,
  };
  const numbers = {
    "--chars": "chars",
    "--temperature": "temperature",
    "--top-k": "topK",
    "--top-p": "topP",
    "--min-p": "minP",
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--json") opts.json = true;
    else if (arg === "--prompt") {
      opts.prompt = argv[++i];
      if (opts.prompt === undefined) throw new Error("--prompt needs a text");
    } else if (arg === "--seed") {
      // A BigInt: seeds go up to 2^63-1, past what a double holds exactly.
      const text = argv[++i] ?? "";
      if (!/^\d+$/.test(text)) throw new Error(`--seed needs a whole number from 0 to 2^63-1, not ${text}`);
      opts.seed = BigInt(text);
    } else if (arg in numbers) {
      const value = Number(argv[++i]);
      if (!Number.isFinite(value)) throw new Error(`${arg} needs a number, not ${argv[i]}`);
      opts[numbers[arg]] = value;
    } else if (arg.startsWith("--")) throw new Error(`unknown option ${arg}`);
    else opts.model = arg;
  }
  return opts;
}

/** A file's JSON, or null when it is not JSON (CharGPT.load then says it was not used). */
function readJson(file) {
  try {
    return JSON.parse(readFileSync(file, "utf8"));
  } catch {
    return null;
  }
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`node_check: error: ${e.message}\n${USAGE}`);
    return 2;
  }
  const files = modelFiles(opts.model);
  let meta;
  try {
    meta = JSON.parse(readFileSync(files.meta, "utf8"));
  } catch (e) {
    console.error(
      `node_check: error: cannot read the model's metadata ${files.meta} (${e.code ?? e.message}); export writes it beside the .onnx file.`,
    );
    return 2;
  }
  if (opts.prompt === undefined) opts.prompt = readAbout(meta).prompt; // the model's default prompt
  const ort = createRequire(import.meta.url)("onnxruntime-node");
  let model;
  try {
    const draftTable = existsSync(files.drafts) ? readJson(files.drafts) : undefined;
    const folder = opts.model.endsWith(".onnx") ? undefined : opts.model.replace(/\/+$/, "");
    const configs = folder && Object.fromEntries(CONFIG_FILES.map((name) => [name, readJson(`${folder}/${name}`)]));
    model = await CharGPT.load(ort, files.onnx, meta, {
      ring: existsSync(files.ring) ? files.ring : undefined,
      draftTable,
      folder,
      configs,
    });
  } catch (e) {
    if (e instanceof ModelFolderError) {
      console.error(`node_check: error: ${e.message}`);
      return 2;
    }
    console.error(
      `node_check: error: ${files.onnx} is not a readable chargpt model (${String(e.message).split("\n")[0]}).`,
    );
    return 2;
  }
  if (model.notice) console.error(`note: ${model.notice}`);
  const { ids } = encodePrompt(opts.prompt, model.vocab);
  const context = ids.slice(-model.receptiveField);
  const result = await model.forward([context]);
  const last = Array.from(new Logits(result, model.vocab.length, context.length - 1).row(0, 0));
  let text;
  try {
    const settings = {
      maxNewTokens: opts.chars,
      temperature: opts.temperature,
      topK: opts.topK,
      topP: opts.topP,
      minP: opts.minP,
      seed: opts.seed,
    };
    [text] = await model.complete(ids, settings);
  } catch (e) {
    console.error(`node_check: error: ${e.message}`);
    return 2;
  }
  if (opts.json) {
    console.log(
      JSON.stringify({
        runtime: `onnxruntime-node ${ort.env.versions.node}`,
        prompt_ids: context,
        dims: result.dims,
        logits: Array.from(result.data),
        text,
      }),
    );
    return 0;
  }
  const top = last
    .map((v, i) => [v, i])
    .sort((a, b) => b[0] - a[0])
    .slice(0, 5);
  console.log(
    `${files.onnx}: onnxruntime-node ${ort.env.versions.node}, ${meta.training.params} parameters, block_size ${model.blockSize}`,
  );
  console.log(
    `logits after ${JSON.stringify(opts.prompt)} (top 5): ${top.map(([v, i]) => `${JSON.stringify(model.vocab[i])} ${v.toFixed(4)}`).join(", ")}`,
  );
  console.log(`${opts.temperature === 0 ? "greedy" : "sampled"} continuation (${opts.chars} characters):`);
  console.log(opts.prompt + text);
  return 0;
}

process.exitCode = await main();

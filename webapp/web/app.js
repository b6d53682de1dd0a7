// The static page: loads model/model.onnx with onnxruntime-web (WebAssembly) and streams text.
import * as ort from "./vendor/ort.wasm.min.mjs";

import { CharGPT, checkSettings, encodePrompt, LIMITS, modelFiles, readAbout } from "./chargpt.js";

const $ = (id) => document.getElementById(id);
const { onnx: MODEL, meta: SIDECAR } = modelFiles("model/model.onnx");

ort.env.wasm.wasmPaths = new URL("./vendor/", import.meta.url).href;
// Threads need a cross-origin isolated page (COOP/COEP headers), which static hosts rarely send.
ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;

// The inputs' bounds are the engine's limits (one definition: chargpt.js's LIMITS).
$("length").max = LIMITS.maxNewTokens;
$("temperature").max = LIMITS.maxTemperature;
$("prompt").maxLength = LIMITS.maxPromptChars;

let model = null;
let stopRequested = false;

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function randomSeed() {
  const words = crypto.getRandomValues(new Uint32Array(2));
  return ((BigInt(words[0]) << 32n) | BigInt(words[1])) & LIMITS.maxSeed;
}

function readSettings() {
  const number = (id) => (($(id).value.trim() === "") ? NaN : Number($(id).value));
  const seedText = $("seed").value.trim();
  let seed;
  if (seedText === "-1" || seedText === "") seed = randomSeed();
  else if (/^\d+$/.test(seedText)) seed = BigInt(seedText);
  else throw new RangeError(`seed must be a whole number from 0 to 2^63-1 (or -1 for a random one), not ${seedText}.`);
  return checkSettings({
    maxNewTokens: number("length"), temperature: number("temperature"), topK: number("top-k"), topP: number("top-p"), seed,
  });
}

async function generate() {
  let settings;
  try {
    settings = readSettings();
  } catch (e) {
    setStatus(e.message, true);
    return;
  }
  const promptText = $("prompt").value;
  if ([...promptText].length > LIMITS.maxPromptChars) {
    setStatus(`The prompt has ${[...promptText].length} characters; the most is ${LIMITS.maxPromptChars}.`, true);
    return;
  }
  const { ids, dropped } = encodePrompt(promptText, model.vocab);
  const out = $("output");
  out.textContent = "";
  const shown = document.createElement("span");
  shown.className = "prompt-text";
  shown.textContent = promptText;
  const generated = document.createTextNode("");
  out.append(shown, generated);
  stopRequested = false;
  $("generate").disabled = true;
  $("stop").disabled = false;
  const start = performance.now();
  let count = 0;
  let firstMs = null;
  try {
    for await (const step of model.decode(ids, settings)) {
      if (firstMs === null) firstMs = performance.now() - start;
      generated.appendData(model.vocab[step.ids[0]]);
      count += 1;
      if (count % 4 === 0) await new Promise((resolve) => setTimeout(resolve, 0)); // let the page paint
      if (stopRequested) break;
    }
    const seconds = (performance.now() - start) / 1000;
    const note = dropped.length ? `; dropped ${dropped.map((c) => JSON.stringify(c)).join(", ")} (not in the vocabulary)` : "";
    setStatus(`${stopRequested ? "Stopped after" : "Generated"} ${count} characters in ${seconds.toFixed(2)} s ` +
      `(${(count / seconds).toFixed(0)} characters/s, first after ${firstMs.toFixed(0)} ms), seed ${settings.seed}${note}.`);
  } catch (e) {
    setStatus(`Generation failed: ${e.message}`, true);
  } finally {
    $("generate").disabled = false;
    $("stop").disabled = true;
  }
}

/** The model's title, description, default prompt and example prompts (its metadata's words). */
function present(meta) {
  const about = readAbout(meta);
  document.title = `${about.title} in your browser`;
  $("title").textContent = about.title;
  $("description").textContent = about.description;
  $("prompt").value = about.prompt;
  for (const example of about.examples) {
    const button = document.createElement("button");
    button.type = "button";
    const shown = example.replaceAll("\n", " ↵ ");
    button.textContent = shown.length > 40 ? `${shown.slice(0, 40)}…` : shown;
    button.title = example;
    button.addEventListener("click", () => ($("prompt").value = example));
    $("examples").append(button);
  }
}

async function load() {
  try {
    const response = await fetch(SIDECAR);
    if (!response.ok) throw new Error(`${SIDECAR}: HTTP ${response.status}`);
    const meta = await response.json();
    present(meta);
    const modelResponse = await fetch(MODEL);
    if (!modelResponse.ok) throw new Error(`${MODEL}: HTTP ${modelResponse.status}`);
    const bytes = new Uint8Array(await modelResponse.arrayBuffer());
    model = await CharGPT.load(ort, bytes, meta, { sessionOptions: { executionProviders: ["wasm"] } });
    const t = meta.training;
    $("model-info").textContent = `Model: ${(t.params / 1e6).toFixed(2)} M parameters, ${meta.config.n_layer} layers, ` +
      `window ${meta.config.block_size} characters, validation loss ${t.val_loss?.toFixed(4)} nats/char, ` +
      `${(bytes.length / 1e6).toFixed(2)} MB; onnxruntime-web ${ort.env.versions?.web ?? ""}.`;
    $("generate").textContent = "Generate";
    $("generate").disabled = false;
    setStatus("Ready.");
  } catch (e) {
    $("generate").textContent = "Generate";
    setStatus(`Could not load the model: ${e.message}`, true);
  }
}

$("generate").addEventListener("click", generate);
$("stop").addEventListener("click", () => (stopRequested = true));
load();

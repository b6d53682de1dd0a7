// The static page: loads model/model.onnx (and model/model.ring.onnx, its faster steps, when the
// site has it) with onnxruntime-web (WebAssembly) and streams text.
import * as ort from "./vendor/ort.wasm.min.mjs";

import { CharGPT, colour, encodePrompt, LIMITS, modelFiles, readAbout, samplingParams } from "./chargpt.js";

const $ = (id) => document.getElementById(id);
const { onnx: MODEL, meta: SIDECAR, ring: RING, drafts: DRAFTS } = modelFiles("model/model.onnx");

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
  return samplingParams({
    maxNewTokens: number("length"), temperature: number("temperature"), topK: number("top-k"), topP: number("top-p"),
    minP: number("min-p"), seed,
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
  out.append(shown);
  stopRequested = false;
  $("generate").disabled = true;
  $("stop").disabled = false;
  const start = performance.now();
  const text = [];
  let firstMs = null;
  let pending = [];
  let lastYield = start;
  try {
    for await (const step of model.decode(ids, settings)) {
      if (firstMs === null) firstMs = performance.now() - start;
      const ch = model.vocab[step.ids[0]];
      text.push(ch);
      pending.push([ch, step.probs[0]]);
      // The page is drawn, and Stop heard, every UPDATE_MS: characters wait for the next update
      // rather than each touching the DOM, and the loop then yields to the browser (with a
      // MessageChannel message: setTimeout(0) is clamped to 4 ms when nested). Each update lays
      // out the whole text again: 20 a second, as the Gradio page, rather than one a frame, which
      // took about as long as the decoding itself in headless Chromium.
      if (performance.now() - lastYield >= UPDATE_MS) {
        appendColoured(out, pending);
        pending = [];
        await nextTask();
        lastYield = performance.now();
      }
      if (stopRequested) break;
    }
    appendColoured(out, pending);
    const seconds = (performance.now() - start) / 1000;
    window.chargptLastRun = { text: text.join(""), chars: text.length, seconds, firstMs };
    const note = dropped.length ? `; dropped ${dropped.map((c) => JSON.stringify(c)).join(", ")} (not in the vocabulary)` : "";
    setStatus(`${stopRequested ? "Stopped after" : "Generated"} ${text.length} characters in ${seconds.toFixed(2)} s ` +
      `(${(text.length / seconds).toFixed(0)} characters/s, first after ${firstMs.toFixed(0)} ms), seed ${settings.seed}${note}.`);
  } catch (e) {
    setStatus(`Generation failed: ${e.message}`, true);
  } finally {
    $("generate").disabled = false;
    $("stop").disabled = true;
  }
}

/** Generated characters as spans coloured by the probability the model gave each (hover: the
 * number), as the Gradio page does (webapp/server/coloured.py). */
function appendColoured(out, pieces) {
  if (pieces.length === 0) return;
  const fragment = document.createDocumentFragment();
  for (const [ch, p] of pieces) {
    const span = document.createElement("span");
    span.style.background = colour(p);
    span.title = `p = ${p.toFixed(2)}`;
    span.textContent = ch;
    fragment.append(span);
  }
  out.append(fragment);
}

const UPDATE_MS = 50;
const channel = new MessageChannel();
/** A promise that resolves in a new task, after the browser has had its turn (paint, clicks). */
function nextTask() {
  return new Promise((resolve) => {
    channel.port1.onmessage = () => resolve();
    channel.port2.postMessage(null);
  });
}

function showLegend() {
  for (const p of [0.1, 0.3, 0.5, 0.7, 0.9]) {
    const stop = document.createElement("span");
    stop.style.background = colour(p);
    stop.textContent = ` ${p.toFixed(1)} `;
    $("legend").append(stop);
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
    // The ring file (faster steps; webapp/inference/ring.py) and the draft table (webapp/inference/drafting.py) are
    // optional: a site without them runs the model file alone, or drafts from the text's own repeats.
    const [modelResponse, ringResponse, draftsResponse] = await Promise.all([fetch(MODEL), fetch(RING).catch(() => null),
      fetch(DRAFTS).catch(() => null)]);
    if (!modelResponse.ok) throw new Error(`${MODEL}: HTTP ${modelResponse.status}`);
    const bytes = new Uint8Array(await modelResponse.arrayBuffer());
    const ring = ringResponse?.ok ? new Uint8Array(await ringResponse.arrayBuffer()) : undefined;
    const draftTable = draftsResponse?.ok ? await draftsResponse.json().catch(() => null) : undefined; // null: not JSON, refused with a notice
    model = await CharGPT.load(ort, bytes, meta, { sessionOptions: { executionProviders: ["wasm"] }, ring, draftTable });
    if (model.notice) console.warn(model.notice);
    const t = meta.training;
    $("model-info").textContent = `Model: ${(t.params / 1e6).toFixed(2)} M parameters, ${meta.config.n_layer} layers, ` +
      `window ${meta.config.block_size} characters, validation loss ${t.val_loss?.toFixed(4)} nats/char, ` +
      `${((bytes.length + (model.ring ? ring.length : 0)) / 1e6).toFixed(2)} MB${model.ring ? " with its ring file" : ""}` +
      `${model.draftTable ? ` and draft table (${model.draftTable.next.size.toLocaleString("en")} contexts)` : ""}; ` +
      `onnxruntime-web ${ort.env.versions?.web ?? ""}.`;
    $("generate").textContent = "Generate";
    $("generate").disabled = false;
    setStatus("Ready.");
  } catch (e) {
    $("generate").textContent = "Generate";
    setStatus(`Could not load the model: ${e.message}`, true);
  }
}

showLegend();
$("generate").addEventListener("click", generate);
$("stop").addEventListener("click", () => (stopRequested = true));
load();

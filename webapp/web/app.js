// The static page: loads model/model.onnx (and model/model.ring.onnx, its faster steps, when the
// site has it) with onnxruntime-web (WebAssembly) and streams text. What the model considered at
// each character, choosing another, the next character's chart and where each head looked (with
// model/model.attention.onnx, loaded once the page is ready): views.js draws them from what
// chargpt.js computes here (docs/views.md).
import * as ort from "./vendor/ort.wasm.min.mjs";

import {
  CharGPT,
  colour,
  encodePrompt,
  LIMITS,
  modelFiles,
  NO_ATTENTION_FILE,
  nextCharacter,
  readAbout,
  samplingParams,
  spellAlternatives,
} from "./chargpt.js";

const $ = (id) => document.getElementById(id);
const views = globalThis.chargptViews; // views.js, loaded before this module
const { onnx: MODEL, meta: SIDECAR, ring: RING, drafts: DRAFTS, attention: ATTENTION } = modelFiles("model/model.onnx");
const CHART_DELAY_MS = 150; // the prompt's chart waits for a pause in typing

ort.env.wasm.wasmPaths = new URL("./vendor/", import.meta.url).href;
// Threads need a cross-origin isolated page (COOP/COEP headers), which static hosts rarely send.
ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;

// The inputs' bounds are the engine's limits (one definition: chargpt.js's LIMITS).
$("length").max = LIMITS.maxNewTokens;
$("temperature").max = LIMITS.maxTemperature;
$("prompt").maxLength = LIMITS.maxPromptChars;

let model = null;
let stopRequested = false;
// The text on the page: its prompt and settings (the seed drawn), and per generated character
// {char, prob, logits, chosen} (logits: what it was drawn from, for its alternatives).
let shown = null;
const history = []; // earlier texts, for Undo
// The chart's text and the logits of its next character.
let charted = null;
let chartTimer = null;
// The attention file's session once loaded (null: why not, in attentionNotice).
let attentionReady = null;
let attentionNotice = "";
// The model runs one call at a time: a chart's forward waits for a generation, and the reverse.
let modelTurn = Promise.resolve();

function exclusive(task) {
  const run = modelTurn.then(task, task);
  modelTurn = run.catch(() => {});
  return run;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function randomSeed() {
  const words = crypto.getRandomValues(new Uint32Array(2));
  return ((BigInt(words[0]) << 32n) | BigInt(words[1])) & LIMITS.maxSeed;
}

const number = (id) => ($(id).value.trim() === "" ? NaN : Number($(id).value));

function readSettings() {
  const seedText = $("seed").value.trim();
  let seed;
  if (seedText === "-1" || seedText === "") seed = randomSeed();
  else if (/^\d+$/.test(seedText)) seed = BigInt(seedText);
  else throw new RangeError(`seed must be a whole number from 0 to 2^63-1 (or -1 for a random one), not ${seedText}.`);
  return samplingParams({
    maxNewTokens: number("length"),
    temperature: number("temperature"),
    topK: number("top-k"),
    topP: number("top-p"),
    minP: number("min-p"),
    seed,
  });
}

/** The prompt as the model reads it when empty: a newline (encodePrompt's start). */
function start(promptText) {
  return promptText || model.vocab[encodePrompt("", model.vocab).ids[0]];
}

const textOf = (page, upTo = page.chars.length) =>
  start(page.promptText) +
  page.chars
    .slice(0, upTo)
    .map((c) => c.char)
    .join("");

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
  history.length = 0;
  await write({ promptText, settings, chars: [] }, "Generated");
}

/** Decode after `page`'s text (its prompt and the characters it has), drawing each new character
 * as it comes; the page's text when it ends. */
async function write(page, verb) {
  shown = page;
  draw();
  stopRequested = false;
  for (const id of ["generate", "undo"]) $(id).disabled = true;
  $("stop").disabled = false;
  const { ids, dropped } = encodePrompt(textOf(page), model.vocab);
  await exclusive(async () => {
    const began = performance.now(),
      text = [];
    let firstMs = null,
      pending = [],
      lastYield = began;
    try {
      for await (const step of model.decode(ids, page.settings)) {
        if (firstMs === null) firstMs = performance.now() - began;
        const char = model.vocab[step.ids[0]];
        text.push(char);
        pending.push({
          char,
          id: step.ids[0],
          prob: step.probs[0],
          logits: Float32Array.from(step.logits[0]),
          chosen: false,
        });
        // The page is drawn, and Stop heard, every UPDATE_MS: characters wait for the next update
        // rather than each touching the DOM, and the loop then yields to the browser (with a
        // MessageChannel message: setTimeout(0) is clamped to 4 ms when nested). Each update lays
        // out the whole text again: 20 a second, as the Gradio page, rather than one a frame, which
        // took about as long as the decoding itself in headless Chromium.
        if (performance.now() - lastYield >= UPDATE_MS) {
          append(pending);
          pending = [];
          await nextTask();
          lastYield = performance.now();
        }
        if (stopRequested) break;
      }
      append(pending);
      const seconds = (performance.now() - began) / 1000;
      window.chargptLastRun = { text: text.join(""), chars: text.length, seconds, firstMs };
      const note = dropped.length
        ? `; dropped ${dropped.map((c) => JSON.stringify(c)).join(", ")} (not in the vocabulary)`
        : "";
      setStatus(
        `${stopRequested ? "Stopped after" : verb} ${text.length} characters in ${seconds.toFixed(2)} s ` +
          `(${(text.length / seconds).toFixed(0)} characters/s, first after ${firstMs.toFixed(0)} ms), seed ${page.settings.seed}${note}.`,
      );
    } catch (e) {
      setStatus(`Generation failed: ${e.message}`, true);
    }
  });
  $("generate").disabled = false;
  $("undo").disabled = history.length === 0;
  $("stop").disabled = true;
  chartText(textOf(page));
}

/** The page's text drawn again: the prompt, then its characters. */
function draw() {
  const out = $("output");
  const prompt = document.createElement("span");
  prompt.className = "prompt-text";
  prompt.textContent = shown.promptText;
  out.replaceChildren(prompt);
  const chars = shown.chars;
  shown.chars = [];
  append(chars);
}

/** Generated characters as spans coloured by the probability the model gave each (hover: the
 * number), as the Gradio page does (webapp/server/coloured.py); the first is the text's Tab stop
 * (views.js moves between them). */
function append(chars) {
  if (chars.length === 0) return;
  const fragment = document.createDocumentFragment();
  for (const c of chars) {
    const span = document.createElement("span");
    span.style.background = colour(c.prob);
    span.title = `p = ${c.prob.toFixed(2)}${c.chosen ? " · your choice" : ""}`;
    span.dataset.i = shown.chars.length;
    span.tabIndex = shown.chars.length === 0 ? 0 : -1;
    if (c.chosen) span.className = "chargpt-chosen";
    span.textContent = c.char;
    shown.chars.push(c);
    fragment.append(span);
  }
  $("output").append(fragment);
}

/** What the model considered at generated character i (views.js's panel). */
function considered(i) {
  const c = shown.chars[i];
  const rows = spellAlternatives(c.logits, shown.settings, c.id, c.prob, views.ALTERNATIVES, model.vocab);
  return { position: i, drawn: c.char, chosen: c.chosen, greedy: shown.settings.temperature === 0, rows };
}

/** The text up to character i, `char` there, and what the model writes after it with the same
 * settings and seed. */
function choose(i, char) {
  if (!$("stop").disabled) return; // a generation is running
  const c = shown.chars[i],
    id = model.vocab.indexOf(char);
  const prob = considered(i).rows.find((row) => row.char === char).model;
  history.push(shown);
  const chars = [...shown.chars.slice(0, i), { ...c, char, id, prob, chosen: true }];
  write({ ...shown, chars }, `Chose ${JSON.stringify(char)}, then wrote`);
}

function undo() {
  if (!history.length || !$("stop").disabled) return;
  shown = history.pop();
  draw();
  $("undo").disabled = history.length === 0;
  setStatus("The text as it was before the last choice.");
  chartText(textOf(shown));
}

/** The chart after `text`: one forward, then drawn again at once whenever a setting moves; then
 * where each head looked from its last character (the attention view), once the attention file
 * has loaded. */
function chartText(text) {
  clearTimeout(chartTimer);
  const encoded = encodePrompt(text, model.vocab);
  const context = encoded.ids
    .slice(-model.receptiveField)
    .map((i) => model.vocab[i])
    .join("");
  exclusive(async () => {
    const logits = await model.nextLogits(encoded.ids);
    const notice = encoded.dropped.length ? `dropped ${encoded.dropped.map((c) => JSON.stringify(c)).join(", ")}` : "";
    charted = { context, notice, logits };
    drawChart();
  }).catch((e) => $("next-char").replaceChildren(`The next character: ${e.message}`));
  attentionReady
    .then((ready) =>
      exclusive(async () => {
        if (!ready) return views.attention({ context, attention: null, attention_notice: attentionNotice });
        const weights = await model.attention(encoded.ids);
        const characters = Array.from(context).slice(-weights[0][0].length);
        const heads = weights.flatMap((row, layer) => row.map((w, head) => ({ layer, head, weights: Array.from(w) })));
        return views.attention({ context, attention: { characters, heads }, attention_notice: "" });
      }),
    )
    .then((view) => $("attention").replaceChildren(view))
    .catch((e) => $("attention").replaceChildren(`Where each head looked: ${e.message}`));
}

/** The attention file, fetched after the page is ready: true once the model reads it. */
async function loadAttention() {
  try {
    const response = await fetch(ATTENTION);
    if (!response.ok) throw new Error(NO_ATTENTION_FILE);
    const bytes = new Uint8Array(await response.arrayBuffer());
    // In the model's turn: its start shares the page's one thread with a generation's steps.
    const session = await exclusive(() => ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] }));
    model.useAttention(session);
    return true;
  } catch (e) {
    attentionNotice = e.message === NO_ATTENTION_FILE ? e.message : `The attention file was not used: ${e.message}`;
    return false;
  }
}

function drawChart() {
  if (!charted) return;
  let params;
  try {
    params = samplingParams({
      temperature: number("temperature"),
      topK: number("top-k"),
      topP: number("top-p"),
      minP: number("min-p"),
    });
  } catch (e) {
    $("next-char").replaceChildren(`The next character: ${e.message}`);
    return;
  }
  const { context, notice, logits } = charted;
  $("next-char").replaceChildren(views.chart({ context, notice, ...nextCharacter(logits, params, model.vocab) }));
}

// For tests and other tools: the text on the page, with the logits each character was drawn from
// and its settings, and the chart's.
window.chargptState = () => ({
  settings: shown && {
    temperature: shown.settings.temperature,
    topK: shown.settings.topK,
    topP: shown.settings.topP,
    minP: shown.settings.minP,
    seed: String(shown.settings.seed),
  },
  chars: shown ? shown.chars.map((c) => ({ char: c.char, logits: Array.from(c.logits) })) : [],
  chart: charted && { context: charted.context, logits: Array.from(charted.logits) },
});

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
    const shownExample = example.replaceAll("\n", " ↵ ");
    button.textContent = shownExample.length > 40 ? `${shownExample.slice(0, 40)}…` : shownExample;
    button.title = example;
    button.addEventListener("click", () => {
      $("prompt").value = example;
      chartText(example);
    });
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
    const [modelResponse, ringResponse, draftsResponse] = await Promise.all([
      fetch(MODEL),
      fetch(RING).catch(() => null),
      fetch(DRAFTS).catch(() => null),
    ]);
    if (!modelResponse.ok) throw new Error(`${MODEL}: HTTP ${modelResponse.status}`);
    const bytes = new Uint8Array(await modelResponse.arrayBuffer());
    const ring = ringResponse?.ok ? new Uint8Array(await ringResponse.arrayBuffer()) : undefined;
    const draftTable = draftsResponse?.ok ? await draftsResponse.json().catch(() => null) : undefined; // null: not JSON, refused with a notice
    model = await CharGPT.load(ort, bytes, meta, {
      sessionOptions: { executionProviders: ["wasm"] },
      ring,
      draftTable,
    });
    if (model.notice) console.warn(model.notice);
    const t = meta.training;
    $("model-info").textContent =
      `Model: ${(t.params / 1e6).toFixed(2)} M parameters, ${meta.config.n_layer} layers, ` +
      `window ${meta.config.block_size} characters, validation loss ${t.val_loss?.toFixed(4)} nats/char, ` +
      `${((bytes.length + (model.ring ? ring.length : 0)) / 1e6).toFixed(2)} MB${model.ring ? " with its ring file" : ""}` +
      `${model.draftTable ? ` and draft table (${model.draftTable.next.size.toLocaleString("en")} contexts)` : ""}; ` +
      `onnxruntime-web ${ort.env.versions?.web ?? ""}.`;
    views.attachInspector($("output"), {
      selector: "span[data-i]",
      infoOf: (span) => considered(Number(span.dataset.i)),
      choose: (span, char) => choose(Number(span.dataset.i), char),
      look: (span) => chartText(textOf(shown, Number(span.dataset.i))),
    });
    views.attachAttention($("attention"));
    attentionReady = loadAttention();
    chartText($("prompt").value);
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
$("undo").addEventListener("click", undo);
$("prompt").addEventListener("input", () => {
  clearTimeout(chartTimer);
  if (model) chartTimer = setTimeout(() => chartText($("prompt").value), CHART_DELAY_MS);
});
for (const id of ["temperature", "top-k", "top-p", "min-p"]) $(id).addEventListener("input", drawChart);
load();

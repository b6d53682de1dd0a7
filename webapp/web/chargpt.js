// chargpt in JavaScript: the sampling specification and the decoding loop over onnxruntime
// (onnxruntime-web in the browser, onnxruntime-node in Node: same API).
//
// A port of the Python inference library (webapp/inference/), in its structure: one settings
// object (samplingParams: sampling.py's SamplingParams) with one function per sampling rule, the
// step interface (PlainSteps and RingSteps: onnx_model.py's PlainSteps and ring.py's RingStep),
// and one decoding loop on it (CharGPT.decode: loop.py's, for one request). The same seed and
// settings give the same text as the Python engine (tests/test_web.py checks it); docs/architecture.md
// maps each Python module to its twin here. The window is in
// the graph (chargpt format 2), so decoding is a prefill and then one cached step per character
// (with the ring file, a step may also check drafted characters: the same text, in fewer steps).
// Numbers are float64 throughout the sampling, as in numpy.

/** Steele, Lea and Flood's SplitMix64: 64-bit state, one uniform in [0, 1) per call. The state
 * is two 32-bit halves in plain numbers, not a BigInt: a BigInt per draw allocated and cost more
 * than the draw itself. Every operation is exact (products split into 16-bit pieces), so the
 * stream is bit for bit the Python one (webapp/inference/sampling.py; tests/test_web.py). */
export class SplitMix64 {
  constructor(seed) {
    const state = BigInt.asUintN(64, BigInt(seed));
    this.hi = Number(state >> 32n);
    this.lo = Number(state & 0xffffffffn);
  }

  /** Advance the state; return the next output as [hi, lo] (unsigned 32-bit halves). */
  next() {
    const lo = this.lo + 0x7f4a7c15;
    this.lo = lo >>> 0;
    this.hi = (this.hi + 0x9e3779b9 + (lo > 0xffffffff ? 1 : 0)) >>> 0;
    let [h, l] = [this.hi, this.lo];
    [h, l] = mul64(h ^ (h >>> 30), (l ^ ((l >>> 30) | (h << 2))) >>> 0, 0xbf58476d, 0x1ce4e5b9);
    [h, l] = mul64(h ^ (h >>> 27), (l ^ ((l >>> 27) | (h << 5))) >>> 0, 0x94d049bb, 0x133111eb);
    return [(h ^ (h >>> 31)) >>> 0, (l ^ ((l >>> 31) | (h << 1))) >>> 0];
  }

  /** A float in [0, 1) from the top 53 bits. */
  uniform() {
    const [hi, lo] = this.next();
    return (hi * 2 ** 21 + (lo >>> 11)) * 2 ** -53;
  }
}

/** The low 64 bits of the product of two 64-bit numbers given as unsigned 32-bit halves. */
function mul64(ah, al, bh, bl) {
  const a0 = al & 0xffff,
    a1 = al >>> 16,
    b0 = bl & 0xffff,
    b1 = bl >>> 16;
  const p00 = a0 * b0,
    p01 = a0 * b1,
    p10 = a1 * b0; // each below 2^32: exact
  const mid = (p00 >>> 16) + (p01 & 0xffff) + (p10 & 0xffff);
  const lo = (((mid & 0xffff) << 16) | (p00 & 0xffff)) >>> 0;
  const carry = a1 * b1 + (p01 >>> 16) + (p10 >>> 16) + (mid >>> 16); // al * bl >> 32, below 2^32
  return [(carry + Math.imul(al, bh) + Math.imul(ah, bl)) >>> 0, lo];
}

/** Probabilities of one row of logits (masked -Infinity logits get 0). */
export function softmax(logits) {
  let max = -Infinity;
  for (const x of logits) max = Math.max(max, x);
  const z = Float64Array.from(logits, (x) => Math.exp(x - max));
  let total = 0;
  for (const x of z) total += x;
  return z.map((x) => x / total);
}

/** Keep the characters whose probability is at least minP times the most likely one's (0 = off):
 * exp(logit - max logit) >= minP, the probabilities' ratio without dividing. */
export function minPFilter(logits, minP) {
  if (minP <= 0) return logits;
  let max = -Infinity;
  for (const x of logits) max = Math.max(max, x);
  return logits.map((x) => (Math.exp(x - max) < minP ? -Infinity : x));
}

/** Keep the logits >= the k-th largest (ties at the boundary kept); k <= 0 or >= vocab: all. */
export function topKFilter(logits, k) {
  if (k <= 0 || k >= logits.length) return logits;
  const kth = Float64Array.from(logits).sort()[logits.length - k];
  return logits.map((x) => (x < kth ? -Infinity : x));
}

/** Keep the smallest set of most probable characters whose probability reaches p (the most
 * probable always); ties in probability are ordered by id. */
export function topPFilter(logits, p) {
  if (p >= 1) return logits;
  const probs = softmax(logits);
  const order = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a] || a - b);
  const out = Float64Array.from(logits);
  let massBefore = 0;
  for (const id of order) {
    if (massBefore >= p) out[id] = -Infinity;
    massBefore += probs[id];
  }
  return out;
}

/** The distribution a draw is made from (temperature > 0): temperature, min-p, top-k, top-p. */
export function samplingProbs(logits, params) {
  const scaled = Float64Array.from(logits, (x) => x / params.temperature);
  return softmax(topPFilter(topKFilter(minPFilter(scaled, params.minP), params.topK), params.topP));
}

/** The distribution a draw is made from at any temperature: all on the argmax (the lowest id on
 * ties) at 0, else samplingProbs (sampling.py's sampling_distribution). */
export function samplingDistribution(logits, params) {
  if (params.temperature > 0) return samplingProbs(logits, params);
  const probs = new Float64Array(logits.length);
  probs[argmax(logits)] = 1;
  return probs;
}

/** One row's ids by their logits, most likely first, the lower id first on ties (sampling.py's likeliest_first). */
function likeliestFirst(logits) {
  return Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a] || a - b);
}

/** sampling.py's top_alternatives for one row of logits: the k likeliest ids (the lower id first
 * on ties), their probabilities in the model's distribution and in the draw's, and the drawn id's
 * probability in the draw's. */
export function topAlternatives(logits, params, drawn, k) {
  const model = softmax(logits),
    sampled = samplingDistribution(logits, params);
  const ids = likeliestFirst(logits).slice(0, k);
  return { ids, model: ids.map((i) => model[i]), sampled: ids.map((i) => sampled[i]), drawn: sampled[drawn] };
}

/** What a page shows at a generated character (engine.py's spell_alternatives): [{char, model,
 * sampled}] for the k likeliest, then the drawn id when it is not among them (prob: the probability
 * the model gave it). */
export function spellAlternatives(logits, params, drawn, prob, k, vocab) {
  const found = topAlternatives(logits, params, drawn, k);
  const rows = found.ids.map((id, j) => ({ char: vocab[id], model: found.model[j], sampled: found.sampled[j] }));
  if (!found.ids.includes(drawn)) rows.push({ char: vocab[drawn], model: prob, sampled: found.drawn });
  return rows;
}

/** webapp/server/next_character.py's distribution: the next character's distribution from its
 * logits, `before` the sampling rules (the model's own) and `after` them (only the characters they
 * keep), characters to probabilities, the likeliest first. */
export function nextCharacter(logits, params, vocab) {
  const order = likeliestFirst(logits);
  const model = softmax(logits),
    sampled = samplingDistribution(logits, params);
  return {
    before: Object.fromEntries(order.map((i) => [vocab[i], model[i]])),
    after: Object.fromEntries(order.filter((i) => sampled[i] > 0).map((i) => [vocab[i], sampled[i]])),
  };
}

/** Inverse CDF: the first id whose cumulative probability exceeds u * total. */
export function draw(probs, u) {
  const cdf = new Float64Array(probs.length);
  let sum = 0;
  probs.forEach((p, i) => (cdf[i] = sum += p));
  const target = u * cdf[cdf.length - 1];
  for (let i = 0; i < cdf.length; i++) if (cdf[i] > target) return i;
  return cdf.length - 1;
}

export function argmax(logits) {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/** Background for a character the model gave probability p: red (unlikely) to green (sure);
 * webapp/server/coloured.py's colour. */
export function colour(p) {
  return `hsl(${Math.round(130 * p)}, 75%, 82%)`;
}

/** The probability the model gave `id` (softmax of the row, float64), without building the
 * distribution. */
export function probabilityOf(logits, id) {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let total = 0;
  for (let i = 0; i < logits.length; i++) total += Math.exp(logits[i] - max);
  return Math.exp(logits[id] - max) / total;
}

/** The next id for one row of logits: greedy at temperature 0 (nothing drawn), else a draw. */
export function nextId(logits, params, rng) {
  if (params.temperature === 0) return argmax(logits);
  return draw(samplingProbs(logits, params), rng.uniform());
}

/** Map a prompt to ids: a character outside the vocabulary is replaced by its accent-free form
 * when that is in the vocabulary (é -> e), else dropped; an empty result starts from "\n". */
export function encodePrompt(text, vocab) {
  const index = new Map(vocab.map((c, i) => [c, i]));
  const ids = [];
  const dropped = new Set();
  for (const ch of text) {
    if (index.has(ch)) {
      ids.push(index.get(ch));
      continue;
    }
    const plain = ch.normalize("NFKD").replace(/\p{Mn}/gu, "");
    if (plain && [...plain].every((c) => index.has(c))) for (const c of plain) ids.push(index.get(c));
    else dropped.add(ch);
  }
  if (ids.length === 0) ids.push(index.has("\n") ? index.get("\n") : 0);
  return { ids, dropped: [...dropped] };
}

// The Python library's limits (sampling.py's MAX_NEW_TOKENS, MAX_SAMPLES, MAX_SEED, MAX_TEMPERATURE;
// engine.py's MAX_PROMPT_CHARS); tests/test_web.py ties them.
export const LIMITS = {
  maxNewTokens: 2000,
  maxPromptChars: 10000,
  maxSamples: 8,
  maxSeed: 2n ** 63n - 1n,
  maxTemperature: 10,
};

/** webapp/inference/sampling.py's SamplingParams: one request's settings, checked, or a RangeError
 * whose message says which and why (the Python sentence). */
export function samplingParams({
  maxNewTokens = 200,
  temperature = 0.8,
  topK = 0,
  topP = 1,
  minP = 0,
  seed = 0,
  numSamples = 1,
} = {}) {
  const whole = (x) => Number.isInteger(x);
  if (!(whole(maxNewTokens) && maxNewTokens >= 1 && maxNewTokens <= LIMITS.maxNewTokens))
    throw new RangeError(
      `max_new_tokens must be a whole number from 1 to ${LIMITS.maxNewTokens}, not ${maxNewTokens}.`,
    );
  if (!(Number.isFinite(temperature) && temperature >= 0 && temperature <= LIMITS.maxTemperature))
    throw new RangeError(`temperature must be between 0 (greedy) and ${LIMITS.maxTemperature}, not ${temperature}.`);
  if (!(whole(topK) && topK >= 0)) throw new RangeError(`top_k must be a whole number, 0 for off, not ${topK}.`);
  if (!(Number.isFinite(topP) && topP > 0 && topP <= 1))
    throw new RangeError(`top_p must be above 0 and at most 1 (1 = off), not ${topP}.`);
  if (!(Number.isFinite(minP) && minP >= 0 && minP <= 1))
    throw new RangeError(`min_p must be between 0 (off) and 1, not ${minP}.`);
  const big = typeof seed === "bigint" ? seed : Number.isInteger(seed) ? BigInt(seed) : -1n;
  if (!(big >= 0n && big <= LIMITS.maxSeed))
    throw new RangeError(`seed must be a whole number from 0 to 2^63-1, not ${seed}.`);
  if (!(whole(numSamples) && numSamples >= 1 && numSamples <= LIMITS.maxSamples))
    throw new RangeError(`num_samples must be from 1 to ${LIMITS.maxSamples}, not ${numSamples}.`);
  return Object.freeze({ maxNewTokens, temperature, topK, topP, minP, seed: big, numSamples });
}

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

/** Why a model shows no attention: it has no attention file (attention.py's load_attention says the same). */
export const NO_ATTENTION_FILE =
  "This model has no model.attention.onnx: it was exported before chargpt showed attention, " +
  "and `python -m export attention FOLDER` adds it to its folder.";

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

/** (layers, heads, head size, logit columns) as a session's graph declares them (graph_sizes in Python). */
export function graphSizes(session) {
  const past = session.inputMetadata.filter((i) => i.name !== "input_ids");
  const logits = session.outputMetadata.find((o) => o.name === "logits");
  return [past.length / 2, past[0].shape[1], past[0].shape[3], logits.shape[2]];
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

/** webapp/inference/ring.py's rotary_tables: cos and signed sin [N, D] at whole positions, the angles in
 * float64 (a JavaScript number) and rounded once. */
export function rotaryTables(positions, headDim, base) {
  const half = headDim / 2;
  const cos = new Float32Array(positions.length * headDim);
  const sin = new Float32Array(positions.length * headDim);
  positions.forEach((position, r) => {
    for (let i = 0; i < half; i++) {
      const angle = position * base ** (-(2 * i) / headDim);
      const [c, s] = [Math.cos(angle), Math.sin(angle)];
      cos[r * headDim + i] = cos[r * headDim + half + i] = c;
      sin[r * headDim + i] = -s;
      sin[r * headDim + half + i] = s;
    }
  });
  return { cos, sin };
}

/** webapp/inference/ring.py's RING_TOLERANCE and VERIFY_CHUNK (tests/test_web.py ties them): max |logit
 * difference| from the model file's steps, and the characters in every other step checked. */
export const RING_TOLERANCE = 1e-4;
export const VERIFY_CHUNK = 4;

/** webapp/inference/ring.py's ring_mask: the ring file's ring_mask [B, T, S + T] for T new characters a
 * row: each sees its row's filled slots (mask [B, S]: 0 or -Infinity) but the ones its window
 * has left, and the new characters up to itself. */
export function ringMask(mask, positions, T, S) {
  const out = new Float32Array(positions.length * T * (S + T));
  positions.forEach((position, b) => {
    for (let t = 0; t < T; t++) {
      const row = (b * T + t) * (S + T);
      out.set(mask.subarray(b * S, b * S + S), row);
      for (let m = 0; m < t; m++) out[row + ((position + m) % S)] = -Infinity;
      for (let u = t + 1; u < T; u++) out[row + S + u] = -Infinity;
    }
  });
  return out;
}

// webapp/inference/drafting.py's MAX_DRAFT, MIN_MATCH, MAX_MATCH, REPEAT_MATCH and TABLE_FORMAT (tests/test_web.py ties them).
export const MAX_DRAFT = 15,
  MIN_MATCH = 2,
  MAX_MATCH = 16,
  REPEAT_MATCH = 6,
  TABLE_FORMAT = "chargpt-drafts/1";

/** webapp/inference/drafting.py's as_text: ids as a string, one UTF-16 unit each (vocabularies below 65,536). */
export function asText(ids) {
  return String.fromCharCode(...ids);
}

/** webapp/inference/drafting.py's read_table: a draft table file's JSON (MODEL.drafts.json) as
 * {next: Map of contexts to ids, as asText, order}; throws an Error saying why it is not one. */
export function readDraftTable(data, vocab) {
  if (data === null || typeof data !== "object" || data.format !== TABLE_FORMAT)
    throw new Error(`it is not a draft table of format ${JSON.stringify(TABLE_FORMAT)}`);
  const { order, next: entries } = data;
  if (!(
    Number.isInteger(order) &&
    order >= 0 &&
    order <= 64 &&
    entries !== null &&
    typeof entries === "object" &&
    !Array.isArray(entries)
  ))
    throw new Error("its order or its table is missing or malformed");
  const index = new Map(vocab.map((c, i) => [c, String.fromCharCode(i)]));
  const spell = (text) => {
    if (typeof text !== "string") return null;
    const ids = Array.from(text, (c) => index.get(c));
    return ids.includes(undefined) ? null : ids.join("");
  };
  const next = new Map();
  for (const [context, then] of Object.entries(entries)) {
    const [c, n] = [spell(context), spell(then)];
    if (c === null || n === null || n.length !== 1)
      throw new Error("it holds characters that are not in the model's vocabulary");
    if (c.length <= order) next.set(c, n);
  }
  return { next, order };
}

/** webapp/inference/drafting.py's DraftTable.follow: maxChars ids, each the table's continuation of the
 * longest context it holds that ends the text so far; shorter when none does. */
export function follow(table, history, maxChars) {
  const last = (text) => text.slice(Math.max(text.length - table.order, 0));
  let text = last(history),
    out = "";
  for (let n = 0; n < maxChars; n++) {
    let found; // the longest context first
    for (let k = Math.max(text.length - table.order, 0); k <= text.length && found === undefined; k++)
      found = table.next.get(text.slice(k));
    if (found === undefined) break;
    out += found;
    text = last(text + found);
  }
  return out;
}

/** webapp/inference/drafting.py's draft: maxChars ids (asText) that followed the latest earlier occurrence
 * of the longest ending of `history` that occurred before (MIN_MATCH to MAX_MATCH), "" if none;
 * with a draft table, the table's continuation unless an ending of REPEAT_MATCH ids occurred. */
export function draft(history, maxChars, table = null, minMatch = MIN_MATCH, maxMatch = MAX_MATCH) {
  if (maxChars <= 0) return "";
  let found = -1,
    length = 0;
  for (let k = minMatch; k <= Math.min(maxMatch, history.length - 1); k++) {
    const at = history.lastIndexOf(history.slice(-k), history.length - 1 - k); // ending before the last id
    if (at < 0) break;
    [found, length] = [at, k];
  }
  if (table && length < REPEAT_MATCH) return follow(table, history, maxChars);
  if (found < 0) return "";
  const followed = history.slice(found + length); // where it runs into the end, the text goes on repeating itself
  return followed.repeat(Math.floor(maxChars / followed.length) + 1).slice(0, maxChars);
}

/** webapp/inference/drafting.py's next_budget: the most characters the next draft may have, 2 more
 * after a draft kept whole (a step of `drafted` characters that wrote drafted + 1), 1 fewer (at
 * least 1) after one that was not. */
export function nextBudget(budget, drafted, written, maxDraft) {
  if (!drafted) return budget;
  return written === drafted + 1 ? Math.min(budget + 2, maxDraft) : Math.max(budget - 1, 1);
}

/** webapp/inference/drafting.py's drafts: one draft per row, as ids, cut to the shortest. */
export function drafts(histories, maxChars, table = null) {
  const found = histories.map((h) => draft(h, maxChars, table));
  const k = Math.min(...found.map((d) => d.length));
  return found.map((d) => Array.from(d.slice(0, k), (c) => c.charCodeAt(0)));
}

/** The metadata's chargpt format that this code reads (webapp/inference/onnx_model.py's FORMAT_VERSION). */
export const FORMAT_VERSION = "2";

/** What the page says about the model: its metadata's `about` (written by python -m export),
 * else neutral words; examples outside the vocabulary are left out. webapp/server/about.py's rules. */
export const NEUTRAL_ABOUT = {
  title: "chargpt",
  description: "A small character-level GPT. Write the start of a text and let it continue.",
};
const MAX_EXAMPLES = 12;

export function readAbout(meta) {
  const about = meta.about !== null && typeof meta.about === "object" && !Array.isArray(meta.about) ? meta.about : {};
  const line = (key) => (typeof about[key] === "string" && about[key].trim() ? about[key].trim() : NEUTRAL_ABOUT[key]);
  const vocab = new Set(meta.vocab);
  const examples = (Array.isArray(about.examples) ? about.examples : [])
    .filter((e) => typeof e === "string" && e.length > 0 && [...e].every((c) => vocab.has(c)))
    .slice(0, MAX_EXAMPLES);
  return { title: line("title"), description: line("description"), examples, prompt: examples[0] ?? "" };
}

/** Logits [B, T, columns] as a session returns them (the model file's last column is the
 * end-of-text id, never sampled), read from position `first` on: `row(r, j)` is row r's logits
 * over the vocabulary at position first + j, for j below `width`. */
export class Logits {
  constructor({ data, dims }, vocabSize, first = 0) {
    [this.data, this.dims, this.vocabSize, this.first] = [data, dims, vocabSize, first];
    this.width = dims[1] - first;
  }

  row(r, j) {
    const [, length, columns] = this.dims;
    const at = (r * length + this.first + j) * columns;
    return this.data.subarray(at, at + this.vocabSize);
  }
}

/** The step interface on the model file (webapp/inference/onnx_model.py's PlainSteps, which says
 * what each method does): one character a row a step, the cache fed back as the next past. */
export class PlainSteps {
  constructor(model) {
    this.model = model;
    this.maxBlock = 1;
  }

  async prefill(rows) {
    const result = await this.model.forward(rows);
    return { logits: new Logits(result, this.model.vocab.length, rows[0].length - 1), state: result.past };
  }

  async forward(rows, state) {
    const result = await this.model.forward(rows, state);
    return { logits: new Logits(result, this.model.vocab.length), uncommitted: result.past };
  }

  commit(state, uncommitted) {
    return uncommitted;
  }
}

/** The step interface on the ring file (webapp/inference/ring.py's RingStep): up to maxBlock
 * characters a row a step, the state a ring of blockSize - 1 slots per layer. */
export class RingSteps {
  constructor(model, session) {
    this.model = model;
    this.session = session;
    this.maxBlock = model.blockSize - 1;
  }

  async prefill(rows) {
    const result = await this.model.forward(rows);
    const length = rows[0].length;
    return { logits: new Logits(result, this.model.vocab.length, length - 1), state: this.state(result.past, length) };
  }

  async forward(rows, state) {
    const uncommitted = await this.run(rows, state);
    return { logits: new Logits(uncommitted, this.model.vocab.length), uncommitted };
  }

  commit(state, uncommitted, count) {
    const { n_head: H, head_dim: D } = this.model.config;
    const S = this.maxBlock,
      L = uncommitted.dims[1];
    uncommitted.added.forEach((data, i) => {
      for (let bh = 0; bh < data.length / (L * D); bh++)
        for (let t = 0; t < count; t++)
          state.rings[i].set(
            data.subarray((bh * L + t) * D, (bh * L + t + 1) * D),
            (bh * S + ((state.positions[Math.floor(bh / H)] + t) % S)) * D,
          );
    });
    state.positions.forEach((position, b) => {
      for (let t = 0; t < count; t++) state.mask[b * S + ((position + t) % S)] = 0;
    });
    state.positions = state.positions.map((position) => position + count);
    return state;
  }

  /** RingStep.state: the ring after a prefill of `length` characters whose cache (the model
   * file's presents, keys not rotated) is `past`. */
  state(past, length) {
    const { n_head: H, head_dim: D, rope_base: base } = this.model.config;
    const S = this.maxBlock,
      half = D / 2;
    const [B, , kept] = past[this.model.pastNames[0]].dims;
    const positions = Array.from({ length: kept }, (_, j) => length - kept + j);
    const { cos, sin } = rotaryTables(positions, D, base);
    const f = Math.fround; // each product and sum rounded to float32, as numpy's float32 arithmetic is
    const rings = this.model.pastNames.map((name, n) => {
      const source = past[name].data;
      const ring = new Float32Array(B * H * S * D);
      for (let bh = 0; bh < B * H; bh++)
        positions.forEach((position, j) => {
          const from = (bh * kept + j) * D,
            to = (bh * S + (position % S)) * D;
          if (n % 2) return ring.set(source.subarray(from, from + D), to); // a value
          for (let i = 0; i < half; i++) {
            const [x1, x2, t] = [source[from + i], source[from + half + i], j * D + i];
            ring[to + i] = f(f(x1 * cos[t]) + f(x2 * sin[t]));
            ring[to + half + i] = f(f(x2 * cos[t + half]) + f(x1 * sin[t + half]));
          }
        });
      return ring;
    });
    const mask = new Float32Array(B * S).fill(-Infinity);
    for (let b = 0; b < B; b++) for (const position of positions) mask[b * S + (position % S)] = 0;
    return { rings, mask, positions: Array(B).fill(length) };
  }

  /** RingStep.forward's session run: {data, dims [B, T, columns]: the logits, added: per layer
   * and kind, the new keys and values [B, H, T, D]}; the state is untouched. */
  async run(rows, state) {
    const { n_head: H, head_dim: D, rope_base: base } = this.model.config;
    const S = this.maxBlock,
      B = rows.length,
      L = rows[0].length,
      Tensor = this.model.ort.Tensor;
    const { cos, sin } = rotaryTables(
      state.positions.flatMap((p) => Array.from({ length: L }, (_, t) => p + t)),
      D,
      base,
    );
    const feeds = {
      input_ids: new Tensor("int64", BigInt64Array.from(rows.flat(), BigInt), [B, L]),
      rotary_cos: new Tensor("float32", cos, [B, L, D]),
      rotary_sin: new Tensor("float32", sin, [B, L, D]),
      ring_mask: new Tensor("float32", ringMask(state.mask, state.positions, L, S), [B, L, S + L]),
    };
    this.model.pastNames.forEach(
      (n, i) => (feeds[n.replace("past_key_values", "ring")] = new Tensor("float32", state.rings[i], [B, H, S, D])),
    );
    const out = await this.session.run(feeds);
    return {
      data: out.logits.data,
      dims: out.logits.dims,
      added: this.model.pastNames.map((n) => out[n.replace("past_key_values", "new")].data),
    };
  }

  /** RingStep.verify: the largest |logit difference| between ring steps and the model file's, at
   * batch 2, after prefills that leave the ring part-filled and full; the steps take one
   * character and VERIFY_CHUNK characters in turn. */
  async verify(steps = 8) {
    const model = this.model;
    let worst = 0;
    for (const length of [5, model.blockSize + 12]) {
      const rows = [0, 1].map((b) =>
        Array.from({ length: length + steps }, (_, t) => (7 * t + 3 * b + 1) % model.vocab.length),
      );
      let want = await model.forward(rows.map((row) => row.slice(0, length)));
      const state = this.state(want.past, length);
      for (let t = length, n = 0; t < length + steps; n++) {
        const chunk = rows.map((row) => row.slice(t, t + (n % 2 ? VERIFY_CHUNK : 1)));
        want = await model.forward(chunk, want.past);
        const { logits: got, uncommitted } = await this.forward(chunk, state);
        this.commit(state, uncommitted, chunk[0].length);
        const expected = new Logits(want, model.vocab.length);
        for (let b = 0; b < chunk.length; b++)
          for (let j = 0; j < chunk[0].length; j++) {
            const [x, y] = [expected.row(b, j), got.row(b, j)];
            for (let v = 0; v < x.length; v++) worst = Math.max(worst, Math.abs(x[v] - y[v]));
          }
        t += chunk[0].length;
      }
    }
    return worst;
  }
}

/** An exported chargpt model on onnxruntime. `meta` is its JSON metadata (onnx/model.json in a
 * model folder, NAME.json beside NAME.onnx): vocab and config. */
export class CharGPT {
  constructor(ort, session, meta) {
    if (meta["chargpt.format"] !== FORMAT_VERSION)
      throw new Error(
        `the model has chargpt format ${JSON.stringify(meta["chargpt.format"])} and this page reads ` +
          `${FORMAT_VERSION}; export its checkpoint again with python -m export RUN_DIR --out DIR/.`,
      );
    this.ort = ort;
    this.session = session;
    this.vocab = meta.vocab;
    this.config = meta.config;
    this.blockSize = meta.config.block_size;
    this.receptiveField = meta.config.receptive_field;
    this.pastNames = [];
    for (let i = 0; i < meta.config.n_layer; i++)
      this.pastNames.push(`past_key_values.${i}.key`, `past_key_values.${i}.value`);
    this.presentNames = this.pastNames.map((n) => n.replace("past_key_values", "present"));
    this.steps = new PlainSteps(this); // the step interface the loop runs: RingSteps when the ring file is used
    this.maxDraft = MAX_DRAFT; // characters drafted per step; 0: one character a step
    this.notice = ""; // why the ring file or the draft table was not used (Engine.notice in Python)
    this.draftTable = null; // webapp/inference/drafting.py's DraftTable (readDraftTable), when the model has one
    this.attentionSession = null; // the attention file's session (useAttention), when the model has one
  }

  /** Read where the heads looked with `session`, the model's attention file's; an Error (one
   * sentence) when it is not one. */
  useAttention(session) {
    if (!session.outputNames.includes("attentions"))
      throw new Error("model.attention.onnx has no attentions output; export the model again.");
    this.attentionSession = session;
  }

  /** Where each head looked from the last of these ids, as the model read them (the last
   * receptiveField, as a prefill): the model file's cache of the others, then the attention file
   * on the last (attention.py's last_position). Returns weights[layer][head], each a
   * Float32Array of the weights on the last n = min(ids, blockSize) ids, oldest first. */
  async attention(promptIds) {
    const context = promptIds.slice(-this.receptiveField),
      W = this.blockSize;
    const past = context.length > 1 ? (await this.forward([context.slice(0, -1)])).past : this.emptyPast(1);
    const ids = new this.ort.Tensor("int64", BigInt64Array.from([BigInt(context.at(-1))]), [1, 1]);
    const { attentions } = await this.attentionSession.run({ input_ids: ids, ...past });
    const [, layers, heads] = attentions.dims,
      n = Math.min(context.length, W);
    return Array.from({ length: layers }, (_, l) =>
      Array.from({ length: heads }, (_, h) =>
        attentions.data.slice((l * heads + h) * W + W - n, (l * heads + h + 1) * W),
      ),
    );
  }

  /** The ring file's steps, when they run (`notice` says why not, otherwise). */
  get ring() {
    return this.steps instanceof RingSteps ? this.steps : null;
  }

  /** model: a path (Node), URL or bytes (Uint8Array) that ort.InferenceSession.create takes;
   * ring: the same for the model's ring file, if it has one. The ring file is used for cached
   * steps when it agrees with the model file (`notice` says why not, otherwise). draftTable:
   * the parsed JSON of the model's draft table file (MODEL.drafts.json), if it has one: the
   * ring steps also draft from it (`notice` says why not, when it is not one). configs: a model
   * folder's configuration files (CONFIG_FILES, name -> parsed JSON or null) and folder its path:
   * a ModelFolderError names the first file and field that disagree with the graph. */
  static async load(ort, model, meta, { sessionOptions, ring, draftTable, folder, configs } = {}) {
    const session = await ort.InferenceSession.create(model, sessionOptions ?? {});
    const disagreement = configs ? configDisagreement(folder, configs, graphSizes(session)) : null;
    if (disagreement) throw new ModelFolderError(disagreement);
    const lm = new CharGPT(ort, session, meta);
    if (ring && meta.config.position === "rotary")
      await lm.useRing(await ort.InferenceSession.create(ring, sessionOptions ?? {}));
    if (lm.ring && draftTable !== undefined) {
      try {
        lm.draftTable = readDraftTable(draftTable, lm.vocab);
      } catch (e) {
        lm.notice = `the draft table was not used: ${e.message}; drafting from the text's own repeats only`;
      }
    }
    return lm;
  }

  /** Step with `session`, a ring file's, if a short run agrees with the model file. */
  async useRing(session) {
    const ring = new RingSteps(this, session);
    let worst;
    try {
      const mask = (session.inputMetadata ?? []).find((input) => input.name === "ring_mask");
      if (mask?.shape?.length === 2)
        worst =
          "it is an older ring file (one character a step); export the model again to write one that also checks drafts";
      else worst = await ring.verify();
    } catch (e) {
      worst = `it does not run as a ring step (${String(e.message).split("\n")[0]})`;
    }
    if (typeof worst === "number" && worst <= RING_TOLERANCE) {
      this.steps = ring;
      return;
    }
    this.notice = `the ring file was not used: ${typeof worst === "number" ? `max |Δ logit| ${worst.toExponential(1)}` : worst}`;
  }

  emptyPast(batch) {
    const { n_head: h, head_dim: d } = this.config;
    return Object.fromEntries(
      this.pastNames.map((n) => [n, new this.ort.Tensor("float32", new Float32Array(0), [batch, h, 0, d])]),
    );
  }

  /** rows: arrays of ids, all the same length, following the cached characters (none without
   * past). Returns {logits: Float32Array [B, T, V + 1], dims, past}: the graph's last logit is
   * the end-of-text id, which is never sampled. */
  async forward(rows, past) {
    const batch = rows.length;
    const length = rows[0].length;
    const ids = new BigInt64Array(batch * length);
    rows.forEach((row, b) => row.forEach((id, t) => (ids[b * length + t] = BigInt(id))));
    const feeds = { input_ids: new this.ort.Tensor("int64", ids, [batch, length]), ...(past ?? this.emptyPast(batch)) };
    const out = await this.session.run(feeds);
    const present = {};
    this.pastNames.forEach((n, i) => (present[n] = out[this.presentNames[i]]));
    return { data: out.logits.data, dims: out.logits.dims, past: present };
  }

  /** The logits [vocab] that the first character after these ids is drawn from: decode's
   * prefill, one forward and no generation (engine.py's next_logits). */
  async nextLogits(promptIds) {
    const context = promptIds.slice(-this.receptiveField);
    return new Logits(await this.forward([context]), this.vocab.length, context.length - 1).row(0, 0);
  }

  /** webapp/inference/loop.py's loop for one request: yields, per new character, {ids, probs,
   * logits}, one id per row, the probability the model gave it and the row's logits it was drawn
   * from (for what a page shows about it: spellAlternatives); row r samples with seed + r. A prefill of
   * the prompt's last receptive_field characters, then one step after another on `steps`, and no
   * forward pass after the last character. Where the steps take several characters, each step
   * also runs characters drafted from the text's own repeats or the draft table and keeps them up
   * to the first one that differs from what is drawn there: the same text, in fewer steps. */
  async *decode(promptIds, settings) {
    const params = samplingParams(settings),
      rows = params.numSamples;
    const rngs = Array.from({ length: rows }, (_, r) => new SplitMix64(params.seed + BigInt(r)));
    const context = promptIds.slice(-this.receptiveField);
    let { logits, state } = await this.steps.prefill(Array.from({ length: rows }, () => context));
    let uncommitted = null; // a drafted step's forward, kept once the draws say how much of it
    const texts = Array(rows).fill(asText(promptIds));
    let drafted = Array.from({ length: rows }, () => []),
      budget = this.maxDraft,
      left = params.maxNewTokens;
    for (;;) {
      // Sample: the drafted characters drawn as drafted, and one more.
      let j = 0,
        ids;
      for (; ; j++) {
        const logitRows = Array.from({ length: rows }, (_, r) => logits.row(r, j));
        ids = logitRows.map((row, r) => nextId(row, params, rngs[r]));
        yield { ids, probs: logitRows.map((row, r) => probabilityOf(row, ids[r])), logits: logitRows };
        if (--left === 0) return;
        if (j === drafted[0].length || ids.some((id, r) => id !== drafted[r][j])) break;
      }
      if (uncommitted) state = this.steps.commit(state, uncommitted, j + 1);
      drafted.forEach((d, r) => (texts[r] += asText([...d.slice(0, j), ids[r]])));
      budget = nextBudget(budget, drafted[0].length, j + 1, this.maxDraft);
      // Step: each row's next id, and the characters drafted after it where the steps take several.
      const most = Math.min(budget, left - 1, this.steps.maxBlock - 1);
      drafted = this.maxDraft && most > 0 ? drafts(texts, most, this.draftTable) : drafted.map(() => []);
      ({ logits, uncommitted } = await this.steps.forward(
        ids.map((id, r) => [id, ...drafted[r]]),
        state,
      ));
      if (drafted[0].length === 0) [state, uncommitted] = [this.steps.commit(state, uncommitted, 1), null]; // the fed character is always kept
    }
  }

  /** The continuations as strings (for checks and the Node command). */
  async complete(promptIds, settings) {
    const texts = Array(samplingParams(settings).numSamples).fill("");
    for await (const { ids } of this.decode(promptIds, settings)) ids.forEach((id, r) => (texts[r] += this.vocab[id]));
    return texts;
  }
}

// webapp/inference/engine.py's and loop.py's twin: prompts to ids, the alternatives the pages
// show, and CharGPT, the model with its one decoding loop (prefill, then cached steps; loop.py's,
// for one request), and where its heads looked (attention.py's).
import { SplitMix64, nextId, probabilityOf, samplingParams, topAlternatives } from "./sampling.js";
import { MAX_DRAFT, asText, drafts, nextBudget, readDraftTable } from "./drafting.js";
import { RING_TOLERANCE, RingSteps } from "./ring.js";
import { ModelFolderError, configDisagreement } from "./model_folder.js";
import { FORMAT_VERSION, Logits, PlainSteps, graphSizes } from "./onnx_model.js";

/** What a page shows at a generated character (engine.py's spell_alternatives): [{char, model,
 * sampled}] for the k likeliest, then the drawn id when it is not among them (prob: the probability
 * the model gave it). */
export function spellAlternatives(logits, params, drawn, prob, k, vocab) {
  const found = topAlternatives(logits, params, drawn, k);
  const rows = found.ids.map((id, j) => ({ char: vocab[id], model: found.model[j], sampled: found.sampled[j] }));
  if (!found.ids.includes(drawn)) rows.push({ char: vocab[drawn], model: prob, sampled: found.drawn });
  return rows;
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

/** Why a model shows no attention: it has no attention file (attention.py's load_attention says the same). */
export const NO_ATTENTION_FILE =
  "This model has no model.attention.onnx: it was exported before chargpt showed attention, " +
  "and `python -m export attention FOLDER` adds it to its folder.";

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
    const histories = Array(rows).fill(asText(promptIds)); // each row's ids so far, as text, to draft from
    let drafted = Array.from({ length: rows }, () => []),
      budget = this.maxDraft,
      remaining = params.maxNewTokens;
    for (;;) {
      // Sample: the drafted characters drawn as drafted, and one more.
      let j = 0,
        ids;
      for (; ; j++) {
        const logitRows = Array.from({ length: rows }, (_, r) => logits.row(r, j));
        ids = logitRows.map((row, r) => nextId(row, params, rngs[r]));
        yield { ids, probs: logitRows.map((row, r) => probabilityOf(row, ids[r])), logits: logitRows };
        if (--remaining === 0) return;
        if (j === drafted[0].length || ids.some((id, r) => id !== drafted[r][j])) break;
      }
      if (uncommitted) state = this.steps.commit(state, uncommitted, j + 1);
      drafted.forEach((d, r) => (histories[r] += asText([...d.slice(0, j), ids[r]])));
      budget = nextBudget(budget, drafted[0].length, j + 1, this.maxDraft);
      // Step: each row's next id, and the characters drafted after it where the steps take several.
      const maxChars = Math.min(budget, remaining - 1, this.steps.maxBlock - 1);
      drafted = this.maxDraft && maxChars > 0 ? drafts(histories, maxChars, this.draftTable) : drafted.map(() => []);
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

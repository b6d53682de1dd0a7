// webapp/inference/sampling.py's twin: the settings (samplingParams: SamplingParams), one function
// per sampling rule, and SplitMix64's seeded draws. Numbers are float64 throughout, as in numpy.

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
export function likeliestFirst(logits) {
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

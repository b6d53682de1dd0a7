// The next character as webapp/server shows it: next_character.py's distribution and
// coloured.py's colour.
import { likeliestFirst, samplingDistribution, softmax } from "./sampling.js";

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

/** Background for a character the model gave probability p: red (unlikely) to green (sure);
 * webapp/server/coloured.py's colour. */
export function colour(p) {
  return `hsl(${Math.round(130 * p)}, 75%, 82%)`;
}

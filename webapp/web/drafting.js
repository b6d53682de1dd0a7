// webapp/inference/drafting.py's twin: drafts for steps of several characters, from the text's
// own repeats and the model's draft table (MODEL.drafts.json).

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

// webapp/server/about.py's twin: what a page says about its model, from its metadata.

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

// node build.mjs [MODEL] [--out DIR]
// Assembles the static site in dist/ (or DIR): the page, onnxruntime-web's WebAssembly build from
// node_modules, the model (a model folder's onnx/model.onnx and onnx/model.json, or NAME.onnx and
// NAME.json; default the shipped models/chargpt) as model/model.onnx and model/model.json (and its
// ring file, draft table and attention file, when it has them, as model/model.ring.onnx,
// model/model.drafts.json and model/model.attention.onnx), and a
// README whose front matter makes the folder a static Hugging Face Space. Serve it with any
// static server, e.g. python -m http.server -d dist.
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { modelFiles, readAbout } from "./chargpt.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const MODULES = [
  "chargpt.js",
  "sampling.js",
  "drafting.js",
  "ring.js",
  "model_folder.js",
  "onnx_model.js",
  "engine.js",
  "next_character.js",
  "about.js",
];
const PAGE = ["index.html", "style.css", "app.js", "views.js", ...MODULES];
const ORT = ["ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"];
const SHORT_DESCRIPTION_CHARS = 60; // the Hub's limit for a Space's short_description

/** The README whose front matter makes dist/ a static Space, in the model's own words. */
function spaceReadme(about) {
  const line = (text) => JSON.stringify(text); // a JSON string is a YAML scalar
  const short =
    about.description.length > SHORT_DESCRIPTION_CHARS
      ? `${about.description.slice(0, SHORT_DESCRIPTION_CHARS - 1)}…`
      : about.description;
  return `---
title: ${line(`${about.title} in the browser`)}
colorFrom: yellow
colorTo: red
sdk: static
app_file: index.html
pinned: false
short_description: ${line(short)}
---

${about.description}

The model runs client-side with onnxruntime-web. Built by \`node build.mjs\` in chargpt's
\`webapp/web/\`; see the chargpt README.
`;
}

function main(argv) {
  let model = path.join(here, "..", "..", "models", "chargpt");
  let out = path.join(here, "dist");
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--out") out = path.resolve(argv[++i] ?? "");
    else if (argv[i].startsWith("--")) return fail(`unknown option ${argv[i]}`);
    else model = path.resolve(argv[i]);
  }
  const { onnx, meta, ring, drafts, attention } = modelFiles(model);
  const ortDir = path.join(here, "node_modules", "onnxruntime-web", "dist");
  for (const [file, hint] of [
    [onnx, "export one with python -m export"],
    [meta, "export writes it beside the .onnx file"],
    [ortDir, "run npm ci --ignore-scripts in webapp/web first"],
  ]) {
    if (!existsSync(file)) return fail(`${file} does not exist (${hint}).`);
  }
  let about;
  try {
    about = readAbout(JSON.parse(readFileSync(meta, "utf8")));
  } catch (e) {
    return fail(`${meta} is not a model's JSON metadata (${e.message}).`);
  }
  if (existsSync(out) && !existsSync(path.join(out, "index.html")))
    return fail(`${out} exists and is not a built site; choose another --out.`);
  rmSync(out, { recursive: true, force: true });
  mkdirSync(path.join(out, "vendor"), { recursive: true });
  mkdirSync(path.join(out, "model"), { recursive: true });
  for (const f of PAGE) copyFileSync(path.join(here, f), path.join(out, f));
  for (const f of ORT) copyFileSync(path.join(ortDir, f), path.join(out, "vendor", f));
  copyFileSync(onnx, path.join(out, "model", "model.onnx"));
  copyFileSync(meta, path.join(out, "model", "model.json"));
  if (existsSync(ring)) copyFileSync(ring, path.join(out, "model", "model.ring.onnx")); // faster steps (webapp/inference/ring.py)
  if (existsSync(drafts)) copyFileSync(drafts, path.join(out, "model", "model.drafts.json")); // drafts (webapp/inference/drafting.py)
  // where the heads looked (webapp/inference/attention.py)
  if (existsSync(attention)) copyFileSync(attention, path.join(out, "model", "model.attention.onnx"));
  writeFileSync(path.join(out, "README.md"), spaceReadme(about));
  console.log(`built ${out} (model ${model})`);
  return 0;
}

function fail(message) {
  console.error(`build: error: ${message}`);
  return 2;
}

process.exitCode = main(process.argv.slice(2));

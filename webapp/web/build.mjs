// node build.mjs [MODEL.onnx] [--out DIR]
// Assembles the static site in dist/ (or DIR): the page, onnxruntime-web's WebAssembly build from
// node_modules, the model and its JSON sidecar, and a README whose front matter makes the folder
// a static Hugging Face Space. Serve it with any static server, e.g. python -m http.server -d dist.
import { copyFileSync, existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const PAGE = ["index.html", "style.css", "app.js", "chargpt.js"];
const ORT = ["ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"];
const SPACE_README = `---
title: chargpt in the browser
emoji: 🎭
colorFrom: yellow
colorTo: red
sdk: static
app_file: index.html
pinned: false
short_description: A character-level GPT writing Shakespeare in your browser
---

chargpt's model running client-side with onnxruntime-web. Built by \`node build.mjs\` in
chargpt's \`webapp/web/\`; see the chargpt README.
`;

function main(argv) {
  let model = path.join(here, "..", "..", "models", "chargpt.onnx");
  let out = path.join(here, "dist");
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--out") out = path.resolve(argv[++i] ?? "");
    else if (argv[i].startsWith("--")) return fail(`unknown option ${argv[i]}`);
    else model = path.resolve(argv[i]);
  }
  const sidecar = model.replace(/\.onnx$/, ".json");
  const ortDir = path.join(here, "node_modules", "onnxruntime-web", "dist");
  for (const [file, hint] of [[model, "export one with python -m export"], [sidecar, "export writes it beside the model"],
    [ortDir, "run npm ci --ignore-scripts in webapp/web first"]]) {
    if (!existsSync(file)) return fail(`${file} does not exist (${hint}).`);
  }
  if (existsSync(out) && !existsSync(path.join(out, "index.html"))) return fail(`${out} exists and is not a built site; choose another --out.`);
  rmSync(out, { recursive: true, force: true });
  mkdirSync(path.join(out, "vendor"), { recursive: true });
  mkdirSync(path.join(out, "model"), { recursive: true });
  for (const f of PAGE) copyFileSync(path.join(here, f), path.join(out, f));
  for (const f of ORT) copyFileSync(path.join(ortDir, f), path.join(out, "vendor", f));
  copyFileSync(model, path.join(out, "model", "chargpt.onnx"));
  copyFileSync(sidecar, path.join(out, "model", "chargpt.json"));
  writeFileSync(path.join(out, "README.md"), SPACE_README);
  console.log(`built ${out} (model ${model})`);
  return 0;
}

function fail(message) {
  console.error(`build: error: ${message}`);
  return 2;
}

process.exitCode = main(process.argv.slice(2));

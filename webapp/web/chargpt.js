// chargpt in JavaScript: the Python inference library's rules (webapp/inference/), ported for
// onnxruntime-web in the browser and onnxruntime-node in Node (same API), one module per Python
// twin (docs/architecture.md maps them):
//
//   sampling.js        sampling.py: samplingParams (SamplingParams), one function per rule, SplitMix64
//   drafting.js        drafting.py: drafts from the text's own repeats and the draft table
//   ring.js            ring.py: the ring file's steps (RingSteps), rotary tables, masks
//   model_folder.js    model_folder.py: the model's files and their agreement with the graph
//   onnx_model.js      onnx_model.py: the metadata's format, logits, the model file's steps (PlainSteps)
//   engine.js          engine.py, loop.py, attention.py: prompts, alternatives, CharGPT and its loop
//   next_character.js  webapp/server's next_character.py and coloured.py: what the pages show
//   about.js           webapp/server's about.py: what a page says about its model
//
// The same seed and settings give the same text as the Python engine (tests/test_web.py checks
// it). The window is in the graph (chargpt format 2), so decoding is a prefill and then one cached
// step per character (with the ring file, a step may also check drafted characters: the same
// text, in fewer steps). This module gathers them: the page, Node and the tests import from it.
export * from "./sampling.js";
export * from "./drafting.js";
export * from "./ring.js";
export * from "./model_folder.js";
export * from "./onnx_model.js";
export * from "./engine.js";
export * from "./next_character.js";
export * from "./about.js";

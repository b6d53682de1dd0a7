"""chargpt's inference library: an exported model on onnxruntime, with numpy and nothing else
(no torch, no Gradio). export/, benchmarks/ and the server (webapp/server/) stand on it, and
webapp/web/chargpt.js is its JavaScript twin (docs/architecture.md maps module to module).

    model_folder   the model folder's files and tokenizer checks
    onnx_model     loading a model, its metadata, one forward; PlainSteps (the step interface)
    ring           the ring file: the faster step interface of rotary models
    drafting       drafts for steps of several characters
    sampling       SamplingParams, the sampling rules, seeded draws
    loop           the decoding loop (Scheduler), for one request or many
    batching       the loop in a thread of its own, for the server (Batcher)
    engine         Engine: decode, generate and complete text; prompts, stop strings
"""

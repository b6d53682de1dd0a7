"""chargpt web app: onnxruntime engine, Gradio page and API (`python -m webapp`). No torch."""

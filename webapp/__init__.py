"""chargpt's web app, in two layers: the inference library (webapp.inference: onnxruntime and
numpy only) and the server on it (webapp.server: the Gradio page, its API, the model process, the
CLI). `python -m webapp` serves the page; webapp/web holds the JavaScript port and static page."""

"""chargpt export: PyTorch checkpoint -> verified, self-describing ONNX (`python -m export`)."""

"""chargpt training: data, tokenizer, model, loop and checkpoints (`python -m train`)."""

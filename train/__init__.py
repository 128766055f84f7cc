"""Training-side code: small model and tokenizer builders, the training adapter and loop."""

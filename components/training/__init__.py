"""Pieces of the language-model trainer: batches of token crops, the loss, checkpoints, provenance."""

"""Data: the synthetic renderer, dataset readers, preprocessing and batching."""

"""crnn-jax: CRNN text recognition (CNN + BiLSTM + CTC) in pure-functional JAX."""

__version__ = "0.1.0"

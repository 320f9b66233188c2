"""crnn-jax: CRNN text recognition (CNN + BiLSTM + CTC) in pure-functional JAX.

Importing the package is light: ``import crnn_jax.decode`` pulls in only jax and
numpy. Heavier names load on first use.
"""

__version__ = "0.1.0"

# name -> module that defines it, imported on first attribute access.
_LAZY = {
    "Recognizer": "crnn_jax.recognizer",
    "Charset": "crnn_jax.charset",
    "CRNN": "crnn_jax.models",
    "train_and_evaluate": "crnn_jax.train",
}

__all__ = list(_LAZY)


def __getattr__(name):
  if name in _LAZY:
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'crnn_jax' has no attribute {name!r}")

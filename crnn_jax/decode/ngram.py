"""Character n-gram language models for beam-search fusion, built on the host from a corpus."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from crnn_jax.decode._base import CharNgramLM, _check_ids, _check_positive, _encode

# A dense table beyond this many entries is better served by a real n-gram toolkit.
_MAX_LM_ENTRIES = 2**25


def build_char_ngram(
    corpus: str | Iterable[str | Sequence[int]],
    *,
    num_classes: int,
    order: int = 3,
    charset: Any = None,
    blank_id: int = 0,
    discount: float = 0.75,
) -> CharNgramLM:
  """Estimates a character n-gram model on the host, for shallow fusion.

  Each word or line is one sentence: the model predicts its labels and then the end of
  the sentence from the previous `order - 1` labels, the start padded with boundaries.
  Smoothing is interpolated absolute discounting down to a uniform distribution, so
  every label has a finite probability and each row of the table sums to one.

  Args:
    corpus: a word list, each entry a string (encoded with `charset`) or label ids; or a
      single string of text, one sentence per line.
    num_classes: `K`, the number of classes including the blank.
    order: n, the number of labels in an n-gram (1 = unigram).
    charset: as in `build_trie`; only needed for strings.
    blank_id: the blank class; it stands for the sentence boundary.
    discount: the absolute discount in (0, 1).

  Returns:
    A `CharNgramLM` with a `(K**(order-1), K)` table.

  Raises:
    ValueError: for a bad `order` or `discount`, a table over 2**25 entries, an id out
      of range or an unknown character.
  """
  _check_positive("num_classes", num_classes)
  _check_positive("order", order)
  if not 0.0 < discount < 1.0:
    raise ValueError(f"discount must be in (0, 1); got {discount!r}.")
  if num_classes**order > _MAX_LM_ENTRIES:
    raise ValueError(
        f"order={order} with K={num_classes} needs a table of {num_classes**order} "
        f"entries, over the limit of {_MAX_LM_ENTRIES}; use a lower order."
    )
  if isinstance(corpus, str):
    corpus = [line for line in corpus.splitlines() if line]
  k = num_classes
  # counts[n] is (K**n, K): rows are contexts of n labels, columns the next label.
  counts = [np.zeros((k**n, k)) for n in range(order)]
  for item in corpus:
    ids = _encode(item, charset, "corpus")
    _check_ids(ids, num_classes, blank_id, "corpus")
    padded = [blank_id] * (order - 1) + ids + [blank_id]
    for t in range(order - 1, len(padded)):
      context = 0
      for n in range(order):
        counts[n][context, padded[t]] += 1
        context += padded[t - 1 - n] * k**n if n < order - 1 else 0
  probs = np.full((1, k), 1.0 / k)
  for n in range(order):
    # Dropping the oldest label of a context (the highest base-K digit) gives the
    # shorter context, i.e. row r of this order backs off to row r % K**(n-1); tiling
    # the lower-order table lines the rows up.
    lower = np.tile(probs, (k**n // probs.shape[0], 1))
    seen = counts[n].sum(axis=1, keepdims=True)
    types = (counts[n] > 0).sum(axis=1, keepdims=True)
    discounted = np.maximum(counts[n] - discount, 0.0)
    safe = np.maximum(seen, 1.0)
    probs = np.where(seen > 0, (discounted + discount * types * lower) / safe, lower)
  return CharNgramLM(jnp.asarray(np.log(probs), jnp.float32))

"""What every decoder shares: the result types, the language-model and trie arrays, and
the checks of their inputs."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

_NEG_INF = -jnp.inf


class DecodeResult(NamedTuple):
  """Decoded label sequences.

  Attributes:
    tokens: `(B, L)` from `greedy_decode` or `(B, top_k, L)` from the beam searches; int32
      label ids, left-justified, padded with -1.
    lengths: `(B,)` or `(B, top_k)` int32 number of labels.
    scores: `(B,)` or `(B, top_k)` float32. Greedy: log-probability of the best path.
      Beam search: log of the total probability of the label sequence over all its
      alignments, plus `beta * length` and `alpha * LM log-probability` when those are
      used. -inf marks an empty slot (fewer hypotheses than `top_k`, or no lexicon word).
  """

  tokens: jax.Array
  lengths: jax.Array
  scores: jax.Array


class LexiconResult(NamedTuple):
  """The best candidate word per example, from `lexicon_decode`.

  Attributes:
    tokens: `(B, U)` int32 label ids of the chosen candidate, padded with -1.
    lengths: `(B,)` int32 length of the chosen candidate.
    scores: `(B,)` float32 CTC log-probability of the chosen candidate.
    index: `(B,)` int32 position of the chosen candidate in the candidate list.
    candidate_scores: `(B, N)` float32 CTC log-probability of every candidate; -inf for
      an unused (all -1) slot.
  """

  tokens: jax.Array
  lengths: jax.Array
  scores: jax.Array
  index: jax.Array
  candidate_scores: jax.Array


class Trie(NamedTuple):
  """A lexicon as a prefix tree held in device arrays; build it with `build_trie`.

  Attributes:
    children: `(num_nodes, K)` int32; `children[n, c]` is the node reached from node `n`
      by label `c`, or -1. Node 0 is the root (the empty prefix).
    is_word: `(num_nodes,)` bool; whether the path to the node spells a lexicon word.
  """

  children: jax.Array
  is_word: jax.Array


class CharNgramLM(NamedTuple):
  """A character n-gram language model as a dense table; build it with `build_char_ngram`.

  Attributes:
    log_probs: `(K**(order - 1), K)` float32 natural-log probabilities. A row is a context
      of the last `order - 1` labels, written as a base-K number with the most recent
      label as the lowest digit; the blank id stands for the sentence boundary, both in a
      context (start) and as a column (end of sentence).
  """

  log_probs: jax.Array


# ----------------------------------------------------------------------------------------
# Argument checks (static: they run while tracing and raise ValueError).
# ----------------------------------------------------------------------------------------


def _check_logits(logits: jax.Array, logit_paddings: jax.Array, blank_id: int) -> None:
  if logits.ndim != 3:
    raise ValueError(f"logits must have shape (B, T, K); got shape {logits.shape}.")
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    raise ValueError(f"logits must be a float array; got dtype {logits.dtype}.")
  if logit_paddings.shape != logits.shape[:2]:
    raise ValueError(
        f"logit_paddings must have shape (B, T) = {logits.shape[:2]} to match logits; "
        f"got shape {logit_paddings.shape}."
    )
  num_classes = logits.shape[2]
  if not _is_int(blank_id) or not 0 <= blank_id < num_classes:
    raise ValueError(f"blank_id must be an int in [0, K={num_classes}); got {blank_id!r}.")


def _is_int(value: Any) -> bool:
  try:
    operator.index(value)
  except TypeError:
    return False
  return not isinstance(value, bool)


def _check_positive(name: str, value: Any, upper: int | None = None) -> None:
  if not _is_int(value) or value < 1 or (upper is not None and value > upper):
    bound = f" and at most {upper}" if upper is not None else ""
    raise ValueError(f"{name} must be an int of at least 1{bound}; got {value!r}.")


def _context_length(lm: CharNgramLM, num_classes: int) -> int:
  """Returns `order - 1` for an LM table, checking its shape against `K`."""
  shape = jnp.shape(lm.log_probs)
  if len(shape) != 2 or shape[1] != num_classes:
    raise ValueError(f"lm.log_probs must have shape (K**(order-1), K={num_classes}); got {shape}.")
  rows, context = 1, 0
  while rows < shape[0]:
    rows *= num_classes
    context += 1
  if rows != shape[0]:
    raise ValueError(
        f"lm.log_probs must have K**(order-1) rows for K={num_classes}; got {shape[0]}."
    )
  return context


def _log_probs(logits: jax.Array) -> jax.Array:
  # Decoding in bfloat16 would round away the differences that rank the beams.
  return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)


# ----------------------------------------------------------------------------------------
# Greedy (best path) decoding.
# ----------------------------------------------------------------------------------------


def _encode(item: str | Sequence[int], charset: Any, name: str) -> list[int]:
  """Label ids of a word, given as ids or as a string with a charset."""
  if not isinstance(item, str):
    return [int(i) for i in item]
  if charset is None:
    raise ValueError(f"{name} holds strings, so a charset is needed to encode them.")
  if isinstance(charset, str):
    ids = []
    for char in item:
      position = charset.find(char)
      if position < 0:
        raise ValueError(f"{name}: character {char!r} of {item!r} is not in the charset.")
      ids.append(position + 1)
    return ids
  if not hasattr(charset, "encode"):
    raise ValueError(
        f"{name} holds strings, but the charset has no encode(); pass label ids instead."
    )
  return [int(i) for i in charset.encode(item)]


def _check_ids(ids: list[int], num_classes: int, blank_id: int, name: str) -> None:
  for i in ids:
    if not 0 <= i < num_classes or i == blank_id:
      raise ValueError(
          f"{name}: label id {i} in {ids} is outside [0, {num_classes}) or is the blank."
      )

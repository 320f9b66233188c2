"""Exact sequence probabilities, the closed-lexicon decoder that ranks every word by them, and
the trie that restricts beam search to a word list."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from crnn_jax.decode._base import (
    _NEG_INF,
    LexiconResult,
    Trie,
    _check_ids,
    _check_logits,
    _check_positive,
    _encode,
    _log_probs,
)


@functools.partial(jax.jit, static_argnames=("blank_id",))
def sequence_log_probs(
    logits: ArrayLike, logit_paddings: ArrayLike, labels: ArrayLike, *, blank_id: int = 0
) -> jax.Array:
  """Exact CTC log-probability of label sequences, by the forward algorithm.

  Equal to `-optax.ctc_loss` for the same sequence, but several candidate sequences per
  example can be scored at once.

  Args:
    logits: `(B, T, K)` float array of unnormalised per-frame scores.
    logit_paddings: `(B, T)` float array, 1.0 for a padded frame.
    labels: `(B, ..., U)` int array of label ids, left-justified and padded with -1.
      Ids must lie in `[0, K)` and differ from `blank_id`.
    blank_id: the blank class.

  Returns:
    `(B, ...)` float32 `log P(labels | logits)`; -inf where no alignment fits in the
    unpadded frames.

  Raises:
    ValueError: if a shape does not match or `blank_id` is out of range.
  """
  logits, logit_paddings = jnp.asarray(logits), jnp.asarray(logit_paddings)
  labels = jnp.asarray(labels)
  _check_logits(logits, logit_paddings, blank_id)
  batch = logits.shape[0]
  if labels.ndim < 2 or labels.shape[0] != batch or labels.shape[-1] == 0:
    raise ValueError(
        f"labels must have shape (B={batch}, ..., U) with U >= 1; got shape {labels.shape}."
    )
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"labels must be an int array; got dtype {labels.dtype}.")
  extra_shape = labels.shape[1:-1]
  width = labels.shape[-1]
  labels = labels.reshape(batch, -1, width).astype(jnp.int32)  # [B, ..., U] -> [B, N, U]
  num = labels.shape[1]
  lengths = jnp.sum(labels >= 0, axis=-1)  # (B, N)

  # Blank-interleaved labels: [blank, l1, blank, l2, ..., lU, blank], S = 2U + 1 states.
  states = 2 * width + 1
  expanded = jnp.full((batch, num, states), blank_id, jnp.int32)
  expanded = expanded.at[..., 1::2].set(jnp.where(labels >= 0, labels, blank_id))
  state_ids = jnp.arange(states)
  two_back = jnp.pad(expanded[..., :-2], ((0, 0), (0, 0), (2, 0)), constant_values=-1)
  # A state may be entered from two back when it is a label unlike the one before it.
  can_skip = (expanded != blank_id) & (expanded != two_back)
  flat_expanded = expanded.reshape(batch, num * states)

  def shift(x: jax.Array, n: int) -> jax.Array:
    return jnp.pad(x[..., :-n], ((0, 0), (0, 0), (n, 0)), constant_values=_NEG_INF)

  def step(log_alpha, frame):
    frame_log_probs, padded = frame  # (B, K), (B,)
    emit = jnp.take_along_axis(frame_log_probs, flat_expanded, axis=1)
    emit = emit.reshape(batch, num, states)
    arrive = jnp.logaddexp(log_alpha, shift(log_alpha, 1))
    arrive = jnp.logaddexp(arrive, jnp.where(can_skip, shift(log_alpha, 2), _NEG_INF))
    return jnp.where(padded[:, None, None], log_alpha, arrive + emit), None

  # Before the first frame all mass sits in a virtual state that feeds states 0 and 1,
  # which the recurrence reproduces when it starts from state 0 alone.
  log_alpha = jnp.broadcast_to(jnp.where(state_ids == 0, 0.0, _NEG_INF), (batch, num, states))
  frames = (jnp.swapaxes(_log_probs(logits), 0, 1), jnp.swapaxes(logit_paddings > 0.5, 0, 1))
  log_alpha, _ = jax.lax.scan(step, log_alpha, frames)
  end_blank = jnp.take_along_axis(log_alpha, (2 * lengths)[..., None], axis=-1)[..., 0]
  end_label = jnp.take_along_axis(log_alpha, jnp.maximum(2 * lengths - 1, 0)[..., None], axis=-1)[
      ..., 0
  ]
  total = jnp.logaddexp(end_blank, jnp.where(lengths > 0, end_label, _NEG_INF))
  return total.reshape(batch, *extra_shape)


@functools.partial(jax.jit, static_argnames=("blank_id",))
def lexicon_decode(
    logits: ArrayLike, logit_paddings: ArrayLike, candidates: ArrayLike, *, blank_id: int = 0
) -> LexiconResult:
  """Lexicon-based transcription (Shi et al. 2015, sec. 2.3): the most probable candidate.

  Every candidate is scored exactly with `sequence_log_probs`, so the answer is the
  candidate with the highest CTC probability, not an approximation. The cost grows with
  `B * N * U * T`; for large lexicons use `lexicon_beam_search`.

  Args:
    logits: `(B, T, K)` float array of unnormalised per-frame scores.
    logit_paddings: `(B, T)` float array, 1.0 for a padded frame.
    candidates: `(B, N, U)` per-example or `(N, U)` shared int array of candidate words,
      left-justified and padded with -1. An all -1 row is an unused slot.
    blank_id: the blank class.

  Returns:
    A `LexiconResult`: the best candidate's `tokens (B, U)`, `lengths (B,)`,
    `scores (B,)` and `index (B,)`, and `candidate_scores (B, N)`.

  Raises:
    ValueError: if a shape does not match or `blank_id` is out of range.
  """
  logits, logit_paddings = jnp.asarray(logits), jnp.asarray(logit_paddings)
  candidates = jnp.asarray(candidates)
  _check_logits(logits, logit_paddings, blank_id)
  batch = logits.shape[0]
  if candidates.ndim == 2:
    candidates = jnp.broadcast_to(candidates, (batch, *candidates.shape))
  if candidates.ndim != 3 or candidates.shape[0] != batch:
    raise ValueError(
        f"candidates must have shape (B={batch}, N, U) or (N, U); "
        f"got shape {jnp.shape(candidates)}."
    )
  scores = sequence_log_probs(logits, logit_paddings, candidates, blank_id=blank_id)
  lengths = jnp.sum(candidates >= 0, axis=-1, dtype=jnp.int32)
  scores = jnp.where(lengths > 0, scores, _NEG_INF)  # (B, N)
  index = jnp.argmax(scores, axis=1).astype(jnp.int32)
  rows = jnp.arange(batch)
  return LexiconResult(
      tokens=candidates[rows, index].astype(jnp.int32),
      lengths=lengths[rows, index],
      scores=scores[rows, index],
      index=index,
      candidate_scores=scores,
  )


def build_trie(
    words: Iterable[str | Sequence[int]],
    *,
    num_classes: int,
    charset: Any = None,
    blank_id: int = 0,
) -> Trie:
  """Builds a lexicon trie on the host, for `lexicon_beam_search`.

  Memory is `num_nodes * num_classes` int32; a 50k-word English lexicon has about 150k
  nodes (about 38 MB for K=63).

  Args:
    words: the lexicon, each word a string (encoded with `charset`) or label ids.
    num_classes: `K`, the number of classes including the blank.
    charset: a string of characters (id i+1 is character i, blank 0) or an object with
      `encode(str) -> Sequence[int]`; only needed for string words.
    blank_id: the blank class, which no word may contain.

  Returns:
    A `Trie` of device arrays.

  Raises:
    ValueError: for an empty word, an id out of range or an unknown character.
  """
  _check_positive("num_classes", num_classes)
  children: list[list[int]] = [[-1] * num_classes]
  is_word = [False]
  for word in words:
    ids = _encode(word, charset, "words")
    if not ids:
      raise ValueError("words: the empty word cannot be a lexicon entry.")
    _check_ids(ids, num_classes, blank_id, "words")
    node = 0
    for i in ids:
      if children[node][i] < 0:
        children[node][i] = len(children)
        children.append([-1] * num_classes)
        is_word.append(False)
      node = children[node][i]
    is_word[node] = True
  return Trie(jnp.asarray(children, jnp.int32), jnp.asarray(is_word, bool))

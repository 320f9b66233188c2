"""Greedy (best-path) CTC decoding: the most likely class per frame, repeats merged, blanks
dropped."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from crnn_jax.decode._base import DecodeResult, _check_logits, _log_probs


@functools.partial(jax.jit, static_argnames=("blank_id",))
def greedy_decode(
    logits: ArrayLike, logit_paddings: ArrayLike, *, blank_id: int = 0
) -> DecodeResult:
  """Best-path decoding: the most likely label per frame, repeats merged, blanks removed.

  This is the CRNN paper's lexicon-free transcription. Repeats are merged only when no
  blank separates them, so frames "b o o - o k" give "book". A padded frame is skipped:
  labels on both sides of it merge as if it were not there.

  Args:
    logits: `(B, T, K)` float array of unnormalised per-frame scores.
    logit_paddings: `(B, T)` float array, 1.0 for a padded frame.
    blank_id: the blank class.

  Returns:
    A `DecodeResult` with `tokens (B, T)`, `lengths (B,)` and `scores (B,)`, the
    log-probability of the best path (the sum of the per-frame maxima).

  Raises:
    ValueError: if the shapes do not match or `blank_id` is out of range.
  """
  logits, logit_paddings = jnp.asarray(logits), jnp.asarray(logit_paddings)
  _check_logits(logits, logit_paddings, blank_id)
  batch, frames, _ = logits.shape
  log_probs = _log_probs(logits)
  best = jnp.argmax(log_probs, axis=-1).astype(jnp.int32)  # (B, T)
  valid = logit_paddings < 0.5
  # The label of the nearest unpadded frame before t, so padding cannot split a repeat.
  frame_ids = jnp.where(valid, jnp.arange(frames), -1)
  last_valid = jax.lax.cummax(frame_ids, axis=1)
  prev_valid = jnp.pad(last_valid[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
  prev = jnp.take_along_axis(best, jnp.maximum(prev_valid, 0), axis=1)
  prev = jnp.where(prev_valid >= 0, prev, blank_id)
  keep = valid & (best != blank_id) & (best != prev)
  # Left-justify the kept labels; the others go to an out-of-range slot and are dropped.
  slot = jnp.where(keep, jnp.cumsum(keep, axis=1) - 1, frames)
  rows = jnp.arange(batch)[:, None]
  tokens = jnp.full((batch, frames), -1, jnp.int32).at[rows, slot].set(best, mode="drop")
  scores = jnp.sum(jnp.where(valid, jnp.max(log_probs, axis=-1), 0.0), axis=1)
  return DecodeResult(tokens, jnp.sum(keep, axis=1, dtype=jnp.int32), scores)


# ----------------------------------------------------------------------------------------
# Prefix beam search.
# ----------------------------------------------------------------------------------------

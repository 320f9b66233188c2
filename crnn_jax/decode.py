"""CTC decoding in pure JAX: greedy, prefix beam search, lexicon modes and n-gram fusion.

This module owns turning CTC outputs into label sequences. It follows the conventions of
`optax.ctc_loss`: `logits` is a `(B, T, K)` float array of unnormalised scores (any float
dtype; everything is computed in float32 after a `log_softmax`), `logit_paddings` is
`(B, T)` with 1.0 marking a padded frame, and `blank_id` names the blank class. A padded
frame is skipped: nothing in it can change a result. The decoders are vectorised ops and
`lax.scan` over time with static shapes, so they run under `jit` and `vmap`, on sharded
batches and on any backend. The host-side builders (`build_trie`, `build_char_ngram`)
turn word lists into device arrays, and `to_strings` turns results back into text. It
imports only jax, numpy and `crnn_jax.host` (standard library only), so other projects
can use it without the rest of crnn_jax.

References: Graves et al., "Connectionist Temporal Classification", ICML 2006; Graves,
"Supervised Sequence Labelling with RNNs", 2012, ch. 7 (prefix search); Hannun et al.,
"First-Pass Large Vocabulary Continuous Speech Recognition using Bi-Directional Recurrent
DNNs", 2014 (prefix beam search, LM fusion); Shi et al., "An End-to-End Trainable Neural
Network for Image-based Sequence Recognition", 2015 (lexicon-based transcription).

Over 600 lines: it still does six jobs (greedy, beam search, lexicon search, the n-gram
LM, the host-side helpers and CPU top-k); issue 14 item 2 splits it into a package with one
module per job, the public names re-exported. Until then it is one file.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from crnn_jax import host

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


# The search state keeps the batch as the last axis, `(W, B)` rather than `(B, W)`: every
# per-beam and per-candidate operation is then a vector operation across the batch, which
# suits CPUs better than many tiny per-example rows.


class _Beams(NamedTuple):
  """The beam-search state: `W` prefixes per example, kept as hashes, not label buffers.

  The labels are recovered at the end from per-frame back-pointers, so a frame costs
  O(W K) work however long the prefixes grow. Every field has the batch as its last axis.
  """

  length: jax.Array  # (W, B) int32
  last: jax.Array  # (W, B) int32 last label, -1 for the empty prefix
  log_pb: jax.Array  # (W, B) log P(prefix, with the last frame a blank)
  log_pnb: jax.Array  # (W, B) log P(prefix, with the last frame its last label)
  hash: jax.Array  # (2, W, B) uint32 hash of the prefix
  parent_hash: jax.Array  # (2, W, B) uint32 hash of the prefix without its last label
  lm_state: jax.Array  # (W, B) int32 row of the LM table for the prefix's context
  lm_score: jax.Array  # (W, B) LM log-probability of the prefix
  node: jax.Array  # (W, B) int32 trie node of the prefix


# Prefixes are identified by a 64-bit hash (two 32-bit lanes) together with their length.
# Extending two different prefixes of equal length by the same label never collides (each
# step is a bijection of the hash), so a false match needs a 2**-64 coincidence.
_HASH_SEEDS = (0x9E3779B9, 0x7F4A7C15)


def _extend_hash(hashes: jax.Array, labels: jax.Array) -> jax.Array:
  """Hash of `prefix + [label]` from the hash of `prefix`: `(2, ...)`, `(...)` -> `(2, ...)`."""
  seeds = jnp.asarray(_HASH_SEEDS, jnp.uint32).reshape((2,) + (1,) * labels.ndim)
  x = hashes * jnp.uint32(0x01000193)
  x = x ^ (labels[None].astype(jnp.uint32) + seeds)
  # The murmur3 finaliser spreads every input bit over the whole word.
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x85EBCA6B)
  x = x ^ (x >> 13)
  x = x * jnp.uint32(0xC2B2AE35)
  return x ^ (x >> 16)


def _initial_beams(beam_size: int, batch: int, lm_start: int) -> _Beams:
  """The empty prefix with probability one, and `beam_size - 1` empty slots."""
  shape = (beam_size, batch)
  return _Beams(
      length=jnp.zeros(shape, jnp.int32),
      last=jnp.full(shape, -1, jnp.int32),
      log_pb=jnp.full(shape, _NEG_INF).at[0].set(0.0),
      log_pnb=jnp.full(shape, _NEG_INF),
      hash=jnp.zeros((2, *shape), jnp.uint32),
      parent_hash=jnp.zeros((2, *shape), jnp.uint32),
      lm_state=jnp.full(shape, lm_start, jnp.int32),
      lm_score=jnp.zeros(shape),
      node=jnp.zeros(shape, jnp.int32),
  )


def _take(values: jax.Array, index: jax.Array) -> jax.Array:
  """`values[..., index[n, b], b]` for `values (..., N, B)`, `index (N', B)`.

  A per-example lookup, written as one flat gather (cheaper on CPU than
  `take_along_axis`); leading axes of `values` share the index.
  """
  *lead, size, batch = values.shape
  flat = jnp.clip(index, 0, size - 1) * batch + jnp.arange(batch)
  return values.reshape(*lead, size * batch)[..., flat]


# `_top_k` picks the largest entries one by one on CPU for up to this many ...
_MAX_PICKS = 32
# ... in at least this many rows (for fewer, `lax.top_k`'s per-row cost is smaller).
_MIN_ROWS = 64


def _order_keys(values: jax.Array) -> jax.Array:
  """float32 -> int32 keys in `lax.top_k`'s total order (-0.0 < 0.0, NaN at the ends).

  Only the all-ones NaN maps to the lowest int32, which `_top_k` uses to strike out.
  """
  bits = jax.lax.bitcast_convert_type(values.astype(jnp.float32), jnp.int32)
  # Negative floats order backwards as integers: flip all their bits but the sign.
  return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def _top_k(values: jax.Array, k: int, axis: int) -> tuple[jax.Array, jax.Array]:
  """`lax.top_k` along `axis`: the `k` largest values and their int32 indices, on `axis`.

  Same results, ties to the lower index included. XLA's CPU `top_k` sorts each row on
  its own, up to a microsecond per row; with the batch as the last axis, picking the
  largest entry `k` times is a few vector operations over all rows at once: 3.5-6x as
  fast for the beam search's shapes (measured: a frame's likeliest labels for a batch,
  and a step's best candidates at B=256). The entries are compared as integer keys, so a picked entry
  can be struck out below every value, -inf included. Other backends, large `k` and
  few rows use `lax.top_k`.
  """
  size = values.shape[axis]
  rows = values.size // size
  if jax.default_backend() != "cpu" or k > _MAX_PICKS or rows < _MIN_ROWS:
    moved = jnp.moveaxis(values, axis, -1)
    top, index = jax.lax.top_k(moved, k)
    return jnp.moveaxis(top, -1, axis), jnp.moveaxis(index, -1, axis)
  shape = [1] * values.ndim
  shape[axis] = size
  positions = jnp.arange(size, dtype=jnp.int32).reshape(shape)
  struck_out = jnp.iinfo(jnp.int32).min
  keys = _order_keys(values)
  indices = []
  for _ in range(k):
    best = jnp.max(keys, axis=axis, keepdims=True)
    index = jnp.min(jnp.where(keys == best, positions, size), axis=axis, keepdims=True)
    indices.append(index)
    keys = jnp.where(positions == index, struck_out, keys)
  index = jnp.concatenate(indices, axis=axis)
  return jnp.take_along_axis(values, index, axis=axis), index


class _Columns(NamedTuple):
  """The labels one frame may grow a beam by: the columns of its candidate grid.

  Without pruning, column c is label c (the blank's column never grows a beam). With
  pruning, the columns are the frame's likeliest non-blank labels, best first.
  """

  labels: jax.Array  # (M, B) int32 label of each column
  log_probs: jax.Array  # (M, B) log-probability of each column's label


def _frame_columns(log_probs: jax.Array, beam_size: int, blank_id: int, prune: bool) -> _Columns:
  """The candidate columns of every frame: `log_probs (T, K, B)` -> `(T, ., B)` arrays.

  With `prune`, only the `W + 1` likeliest non-blank labels are kept, best first: no
  other label could ever be kept (see `_grid`).
  """
  num_classes = log_probs.shape[1]
  labels = jnp.arange(num_classes, dtype=jnp.int32)[None, :, None]
  if not prune:
    return _Columns(jnp.broadcast_to(labels, log_probs.shape), log_probs)
  not_blank = jnp.where(labels == blank_id, _NEG_INF, log_probs)
  likely_log_probs, likely = _top_k(not_blank, beam_size + 1, axis=1)
  return _Columns(labels=likely, log_probs=likely_log_probs)


class _Grid(NamedTuple):
  """Which labels a frame tries: for each beam, the first columns of `_Columns`.

  The candidates of one example are "slots": first the `W` beams staying as they are,
  then the growing ones, beam `beam[g]` by the label of column `column[g]`. Host-side
  numpy constants.
  """

  beam: np.ndarray  # (G,) int32 beam of each growing slot, beams in rank order
  column: np.ndarray  # (G,) int32 column of each growing slot
  start: np.ndarray  # (W,) int32 first growing slot of each beam
  width: np.ndarray  # (W,) int32 number of columns (growing slots) of each beam


def _grid(beam_size: int, num_columns: int, ragged: bool) -> _Grid:
  """The growing slots: every column for every beam, or fewer for lower beams.

  Why the pruned columns lose nothing: the beams are sorted by rank and the columns
  are the frame's likeliest labels, best first. Beam r needs only its
  `m = ceil(W / (r + 1)) + 1` likeliest labels: growing it by a less likely label c ranks
  below every candidate that grows one of the beams 0..r by one of those m labels other
  than that beam's last label. Each such candidate has a base at least as high (a
  beam ranked as high or higher, and `P(prefix)` where c has at most that, only
  `P_blank(prefix)` if c repeats the last label) and a likelier label; there are
  `(r + 1)(m - 1) >= W` of them, all distinct prefixes, and merging only raises their
  scores. So c could never be kept. With m = W + 1 for every beam (not `ragged`) the
  argument needs only beam r itself; `ragged` also needs every beam to be able to grow
  (`max_length >= T`). Both need a rank that depends on the label only through its
  probability: no LM and no trie.
  """
  if ragged:
    widths = [min(num_columns, -(-beam_size // (r + 1)) + 1) for r in range(beam_size)]
  else:
    widths = [num_columns] * beam_size
  widths = np.asarray(widths, np.int32)
  return _Grid(
      beam=np.repeat(np.arange(beam_size, dtype=np.int32), widths),
      column=np.concatenate([np.arange(w, dtype=np.int32) for w in widths]),
      start=np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int32),
      width=widths,
  )


def _beam_step(
    beams: _Beams,
    log_probs: jax.Array,
    columns: _Columns,
    *,
    grid: _Grid,
    blank_id: int,
    max_length: int,
    lm: CharNgramLM | None,
    trie: Trie | None,
    alpha: jax.Array,
    beta: jax.Array,
) -> tuple[_Beams, jax.Array, jax.Array]:
  """Advances the beams by one frame of `log_probs (K, B)`.

  Each beam either stays the same prefix or grows by a label; `grid` lists these
  candidates as slots over this frame's `columns`.

  Returns:
    The new beams, sorted by rank, and for each new beam the beam it came from `(W, B)`
    and the label it appended `(W, B)`, -1 if it stayed the same prefix.
  """
  beam_size, batch = beams.length.shape
  num_classes = log_probs.shape[0]
  prev_total = jnp.logaddexp(beams.log_pb, beams.log_pnb)
  alive = prev_total > _NEG_INF
  has_last = beams.last >= 0
  last_log_probs = _take(log_probs, jnp.maximum(beams.last, 0))

  # A prefix stays the same if this frame is a blank, or repeats its last label.
  stay_pb = prev_total + log_probs[blank_id]
  stay_pnb = jnp.where(has_last, beams.log_pnb + last_log_probs, _NEG_INF)

  # Growing beam j's parent by j's last label gives j's prefix again: that mass joins j,
  # and the duplicate candidate is dropped. Hashes find the parent, in O(W^2).
  is_parent = (beams.parent_hash[0][:, None] == beams.hash[0][None]) & (
      beams.parent_hash[1][:, None] == beams.hash[1][None]
  )
  is_parent &= beams.length[:, None] == beams.length[None] + 1
  is_parent &= alive[:, None] & alive[None]  # (W_j, W_i, B)
  has_parent = jnp.any(is_parent, axis=1)
  parent = jnp.argmax(is_parent, axis=1)  # (W, B)
  via_parent = (
      jnp.where(
          beams.last == _take(beams.last, parent),
          _take(beams.log_pb, parent),
          _take(prev_total, parent),
      )
      + last_log_probs
  )
  stay_pnb = jnp.where(has_parent, jnp.logaddexp(stay_pnb, via_parent), stay_pnb)
  stay_total = jnp.logaddexp(stay_pb, stay_pnb)
  # The duplicate is the parent's slot for the column of j's last label, if it has one.
  is_last = columns.labels[None] == beams.last[:, None]  # (W, M, B)
  column = jnp.argmax(is_last, axis=1)
  width, start = jnp.asarray(grid.width)[parent], jnp.asarray(grid.start)[parent]
  listed = has_parent & jnp.any(is_last, axis=1) & (column < width)
  duplicate = jnp.where(listed, start + column, -1)  # (W, B)

  # The growing candidates, one per slot: (G, B).
  beam_of = grid.beam
  label = columns.labels[grid.column]
  label_log_probs = columns.log_probs[grid.column]
  # Repeating the last label needs a blank in between: only P_blank carries over.
  base = jnp.where(label == beams.last[beam_of], beams.log_pb[beam_of], prev_total[beam_of])
  can_grow = (label != blank_id) & (beams.length[beam_of] < max_length)
  if trie is not None:
    # Without a ragged grid the slots are (beam, label) pairs: [W, B, K] -> [W*K, B].
    child = jnp.swapaxes(trie.children[beams.node], 1, 2).reshape(-1, batch)
    can_grow &= child >= 0
  slots = jnp.arange(grid.beam.shape[0])[:, None]
  taken = jnp.any(slots[None] == duplicate[:, None], axis=0)  # (G, B)
  grow_pnb = jnp.where(can_grow & ~taken, base + label_log_probs, _NEG_INF)
  # Staying beams first, then the growing ones: (W + G, B).
  stay_rank = stay_total + beta * beams.length
  grow_rank = grow_pnb + beta * (beams.length[beam_of] + 1)
  cand_lm = None
  if lm is not None:
    # [W, B, K] -> [W*K, B], as for the trie.
    next_lm = jnp.swapaxes(lm.log_probs[beams.lm_state], 1, 2).reshape(-1, batch)
    cand_lm = jnp.concatenate([beams.lm_score, beams.lm_score[beam_of] + next_lm])
    stay_rank += alpha * beams.lm_score
    grow_rank += alpha * cand_lm[beam_size:]
  rank = jnp.concatenate([stay_rank, grow_rank])
  # Keep the best W, sorted.
  _, best = _top_k(rank, beam_size, axis=0)
  grows = best >= beam_size
  grown = jnp.maximum(best - beam_size, 0)  # the growing slot, where it grows
  src = jnp.where(grows, jnp.asarray(grid.beam)[grown], best)
  appended = jnp.where(grows, _take(label, grown), -1)

  src_hash = _take(beams.hash, src)
  new = _Beams(
      length=_take(beams.length, src) + grows,
      last=jnp.where(grows, appended, _take(beams.last, src)),
      log_pb=jnp.where(grows, _NEG_INF, _take(stay_pb, src)),
      log_pnb=jnp.where(grows, _take(grow_pnb, grown), _take(stay_pnb, src)),
      hash=jnp.where(grows, _extend_hash(src_hash, appended), src_hash),
      parent_hash=jnp.where(grows, src_hash, _take(beams.parent_hash, src)),
      lm_state=beams.lm_state,
      lm_score=beams.lm_score,
      node=beams.node,
  )
  if lm is not None:
    state = _take(beams.lm_state, src)
    rows = lm.log_probs.shape[0]
    new = new._replace(
        lm_state=jnp.where(grows, (state * num_classes + appended) % rows, state),
        lm_score=_take(cand_lm, best),
    )
  if trie is not None:
    new = new._replace(node=jnp.where(grows, _take(child, grown), _take(beams.node, src)))
  return new, src, appended


def _backtrack(trace: jax.Array, final: jax.Array, beam_size: int, max_length: int) -> jax.Array:
  """Labels of the final beams from back-pointers.

  Args:
    trace: `(T, W, B)` from the search: `(appended + 1) * W + source` for every new beam,
      where `source` is the beam it came from and `appended` the label it appended
      (-1 for none); one array, so that following a pointer is one lookup.
    final: `(k, B)` beams to read out.
    beam_size: `W`.
    max_length: the length of the result.

  Returns:
    `(B, k, max_length)` int32 labels, left-justified, padded with -1.
  """

  def step(beam, frame_trace):
    entry = _take(frame_trace, beam)
    return entry % beam_size, entry // beam_size - 1

  _, emitted = jax.lax.scan(step, final, trace, reverse=True)
  emitted = jnp.transpose(emitted, (2, 1, 0))  # [T, k, B] -> [B, k, T]
  # Left-justify the emitted labels; the frames that appended nothing are dropped.
  slot = jnp.where(emitted >= 0, jnp.cumsum(emitted >= 0, axis=2) - 1, max_length)
  batch, k, _ = emitted.shape
  tokens = jnp.full((batch, k, max_length), -1, jnp.int32)
  index = jnp.arange(batch)[:, None, None], jnp.arange(k)[None, :, None], slot
  return tokens.at[index].set(emitted, mode="drop")


def _beam_search(
    logits: jax.Array,
    logit_paddings: jax.Array,
    *,
    beam_size: int,
    top_k: int,
    blank_id: int,
    max_length: int | None,
    lm: CharNgramLM | None,
    trie: Trie | None,
    alpha: ArrayLike,
    beta: ArrayLike,
) -> DecodeResult:
  """The shared body of `prefix_beam_search` and `lexicon_beam_search`."""
  logits, logit_paddings = jnp.asarray(logits), jnp.asarray(logit_paddings)
  _check_logits(logits, logit_paddings, blank_id)
  _check_positive("beam_size", beam_size)
  _check_positive("top_k", top_k, upper=beam_size)
  batch, frames, num_classes = logits.shape
  if max_length is None:
    max_length = frames
  _check_positive("max_length", max_length)
  lm_start = 0
  if lm is not None:
    # The start context is order - 1 sentence boundaries, written with the blank id.
    for _ in range(_context_length(lm, num_classes)):
      lm_start = lm_start * num_classes + blank_id
    lm = CharNgramLM(jnp.asarray(lm.log_probs, jnp.float32))
  if trie is not None:
    children = jnp.asarray(trie.children)
    if children.ndim != 2 or children.shape[1] != num_classes:
      raise ValueError(
          f"trie.children must have shape (num_nodes, K={num_classes}); " f"got {children.shape}."
      )
    trie = Trie(children.astype(jnp.int32), jnp.asarray(trie.is_word, bool))
  alpha = jnp.asarray(alpha, jnp.float32)
  beta = jnp.asarray(beta, jnp.float32)
  # Without an LM or a trie only the likeliest labels of a frame can extend a beam.
  prune = lm is None and trie is None and beam_size + 2 < num_classes
  if prune:
    grid = _grid(beam_size, beam_size + 1, ragged=max_length >= frames)
  else:
    grid = _grid(beam_size, num_classes, ragged=False)
  step = functools.partial(
      _beam_step,
      grid=grid,
      blank_id=blank_id,
      max_length=max_length,
      lm=lm,
      trie=trie,
      alpha=alpha,
      beta=beta,
  )

  def search(logits: jax.Array, logit_paddings: jax.Array) -> DecodeResult:
    """The search over time and the read-out, for one part of the batch."""
    batch = logits.shape[0]
    stay_put = jnp.broadcast_to(jnp.arange(beam_size)[:, None], (beam_size, batch))

    def scan_step(beams, frame):
      frame_log_probs, columns, padded = frame
      new, src, appended = step(beams, frame_log_probs, columns)
      # A padded frame leaves every beam of its example where it was.
      new = jax.tree.map(lambda old, value: jnp.where(padded, old, value), beams, new)
      trace = jnp.where(padded, stay_put, (appended + 1) * beam_size + src)
      return new, trace

    log_probs = jnp.transpose(_log_probs(logits), (1, 2, 0))  # [B, T, K] -> [T, K, B]
    columns = _frame_columns(log_probs, beam_size, blank_id, prune)
    beams, trace = jax.lax.scan(
        scan_step,
        _initial_beams(beam_size, batch, lm_start),
        (log_probs, columns, (logit_paddings > 0.5).T),
    )

    rank = jnp.logaddexp(beams.log_pb, beams.log_pnb) + beta * beams.length  # (W, B)
    if lm is not None:
      end = lm.log_probs[beams.lm_state, blank_id]  # the end of the sentence
      rank += alpha * (beams.lm_score + end)
    if trie is not None:
      rank = jnp.where(trie.is_word[beams.node], rank, _NEG_INF)
    scores, order = jax.lax.top_k(rank.T, top_k)  # (B, k)
    found = scores > _NEG_INF
    tokens = _backtrack(trace, order.T, beam_size, max_length)
    tokens = jnp.where(found[..., None], tokens, -1)
    lengths = jnp.where(found, jnp.take_along_axis(beams.length.T, order, axis=1), 0)
    return DecodeResult(tokens, lengths, scores)

  chunks = _num_chunks(batch)
  if chunks == 1:
    return search(logits, logit_paddings)
  # Independent searches over parts of the batch (XLA runs them one after the other).
  bounds = np.linspace(0, batch, chunks + 1).astype(int)
  parts = [search(logits[a:b], logit_paddings[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
  return DecodeResult(*(jnp.concatenate(field) for field in zip(*parts)))


# Examples per part when a batch is split on CPU: it is split only into parts of about
# this size, and only while one such part per core covers it.
_CHUNK = 16


def _num_chunks(batch: int) -> int:
  """How many searches to split a small batch into on CPU: up to one per core.

  Measured on 2 cores (B=32, T=400, K=32, beam 10): two searches of 16 take the same
  wall time as one of 32 but about 40% less CPU time, as one loop keeps a second XLA
  thread busy for no gain. Larger batches (a step picks its best candidates by vector
  ops from 64 examples up, see `_top_k`) and other backends get one search.
  """
  if jax.default_backend() != "cpu":
    return 1
  cores = host.usable_cores()
  if batch > _CHUNK * cores:
    return 1
  return max(1, min(cores, batch // _CHUNK))


@functools.partial(jax.jit, static_argnames=("beam_size", "top_k", "blank_id", "max_length"))
def prefix_beam_search(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    *,
    beam_size: int,
    top_k: int = 1,
    blank_id: int = 0,
    max_length: int | None = None,
    lm: CharNgramLM | None = None,
    alpha: ArrayLike = 0.0,
    beta: ArrayLike = 0.0,
) -> DecodeResult:
  """CTC prefix beam search (Graves 2012, sec. 7.5; Hannun et al. 2014).

  Each beam is a label prefix with two probabilities: that of the frames so far ending
  in a blank, and ending in the prefix's last label. A frame extends every beam by every
  non-blank label and also lets it stay; candidates that spell the same prefix are
  merged, and the `beam_size` best by total probability survive. The score of a prefix
  is therefore the log of its probability summed over all alignments that the beam kept;
  with a beam wide enough to keep every prefix it is exact.

  The result is that of this textbook search; two shortcuts only save work. Without an
  LM, labels that provably cannot enter the beam are not tried (each frame's likeliest
  `beam_size + 1` labels suffice, fewer for lower-ranked beams). Identical prefixes are
  found by a 64-bit hash with the length, so a wrong merge needs a 2**-64 coincidence.
  Cost per frame: O(B * (beam_size**2 + K)) without an LM, O(B * beam_size * K) with one.

  With an n-gram `lm` (shallow fusion), candidates are ranked by
  `log P_ctc + alpha * log P_lm + beta * length`, and the final ranking includes the
  LM's end-of-sentence probability. `beta` applies with or without an LM.

  Args:
    logits: `(B, T, K)` float array of unnormalised per-frame scores.
    logit_paddings: `(B, T)` float array, 1.0 for a padded frame.
    beam_size: number of prefixes kept after each frame.
    top_k: number of hypotheses returned per example, at most `beam_size`.
    blank_id: the blank class.
    max_length: the longest prefix kept, and the length of the returned `tokens`;
      `None` means `T`, which can never be exceeded. A smaller value drops longer
      prefixes and tries all labels for every beam.
    lm: an optional `CharNgramLM` over the same `K` labels.
    alpha: LM weight.
    beta: score added per emitted label.

  Returns:
    A `DecodeResult` with `tokens (B, top_k, max_length)`, `lengths (B, top_k)` and
    `scores (B, top_k)`, best first.

  Raises:
    ValueError: if a shape does not match, `beam_size < 1`, `top_k` is not in
      `[1, beam_size]`, `max_length < 1` or `blank_id` is out of range.
  """
  return _beam_search(
      logits,
      logit_paddings,
      beam_size=beam_size,
      top_k=top_k,
      blank_id=blank_id,
      max_length=max_length,
      lm=lm,
      trie=None,
      alpha=alpha,
      beta=beta,
  )


@functools.partial(jax.jit, static_argnames=("beam_size", "top_k", "blank_id", "max_length"))
def lexicon_beam_search(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    trie: Trie,
    *,
    beam_size: int,
    top_k: int = 1,
    blank_id: int = 0,
    max_length: int | None = None,
    lm: CharNgramLM | None = None,
    alpha: ArrayLike = 0.0,
    beta: ArrayLike = 0.0,
) -> DecodeResult:
  """Prefix beam search constrained to a lexicon held as a trie.

  For lexicons too large to score every word (tens of thousands of words): a prefix
  may only grow along the trie, so every beam is a prefix of some lexicon word, and only
  prefixes that are whole words are returned. Otherwise it is `prefix_beam_search`. An
  example for which no whole word survives in the beam gets score -inf and length 0.
  With a beam wide enough to keep every trie prefix it returns the same word as
  `lexicon_decode` over the whole lexicon.

  Args:
    logits: `(B, T, K)` float array of unnormalised per-frame scores.
    logit_paddings: `(B, T)` float array, 1.0 for a padded frame.
    trie: the lexicon, from `build_trie`, over the same `K` labels.
    beam_size: number of prefixes kept after each frame.
    top_k: number of words returned per example, at most `beam_size`.
    blank_id: the blank class.
    max_length: the longest prefix kept; `None` means `T`. The longest lexicon word is
      enough.
    lm: an optional `CharNgramLM` for shallow fusion.
    alpha: LM weight.
    beta: score added per emitted label.

  Returns:
    A `DecodeResult` with `tokens (B, top_k, max_length)`, `lengths (B, top_k)` and
    `scores (B, top_k)`, best first.

  Raises:
    ValueError: as `prefix_beam_search`, or if the trie is not over `K` labels.
  """
  return _beam_search(
      logits,
      logit_paddings,
      beam_size=beam_size,
      top_k=top_k,
      blank_id=blank_id,
      max_length=max_length,
      lm=lm,
      trie=trie,
      alpha=alpha,
      beta=beta,
  )


# ----------------------------------------------------------------------------------------
# Exact sequence probabilities and the lexicon mode.
# ----------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------
# Host side: lexicon tries, n-gram models and strings.
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


def to_strings(tokens: ArrayLike, lengths: ArrayLike, charset: Any) -> list:
  """Turns decoded label ids into strings, on the host.

  Args:
    tokens: `(..., L)` int array of label ids, as in a `DecodeResult`.
    lengths: `(...)` int array of lengths.
    charset: a string of characters (id i+1 is character i, blank 0) or an object with
      `decode(ids: Sequence[int]) -> str`.

  Returns:
    Nested lists of strings shaped like `lengths`; a plain string for scalar `lengths`.

  Raises:
    ValueError: if the shapes do not match, or an id has no character.
  """
  tokens, lengths = np.asarray(tokens), np.asarray(lengths)
  if tokens.shape[:-1] != lengths.shape:
    raise ValueError(
        f"tokens must have shape lengths.shape + (L,) = {lengths.shape} + (L,); "
        f"got {tokens.shape}."
    )
  if isinstance(charset, str):
    # Check every id in reach of its length at once, then join plain Python lists.
    in_reach = np.arange(tokens.shape[-1]) < lengths[..., None]
    bad = in_reach & ((tokens < 1) | (tokens > len(charset)))
    if bad.any():
      raise ValueError(
          f"tokens: id {int(tokens[bad][0])} has no character; a charset string of "
          f"{len(charset)} characters covers ids 1..{len(charset)}."
      )
    characters = ("",) + tuple(charset)  # id i -> characters[i]

    def decode(ids: list[int]) -> str:
      return "".join([characters[i] for i in ids])

  elif hasattr(charset, "decode"):
    decode = charset.decode
  else:
    raise ValueError(f"charset must be a string or have decode(ids); got {type(charset).__name__}.")

  def convert(row_tokens: list, row_lengths: list | int):
    if isinstance(row_lengths, int):
      return decode(row_tokens[:row_lengths])
    return [convert(t, n) for t, n in zip(row_tokens, row_lengths)]

  return convert(tokens.tolist(), lengths.tolist())

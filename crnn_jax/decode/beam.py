"""Prefix beam search over CTC outputs, optionally fused with a character n-gram model and
restricted to a lexicon trie: the search state, one step of it, and the two public searches."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from crnn_jax import host
from crnn_jax.decode._base import (
    _NEG_INF,
    CharNgramLM,
    DecodeResult,
    Trie,
    _check_logits,
    _check_positive,
    _context_length,
    _log_probs,
)
from crnn_jax.decode.topk import _top_k

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

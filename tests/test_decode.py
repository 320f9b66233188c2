"""Tests for crnn_jax.decode: brute force, a NumPy reference, padding, jit/vmap/sharding."""

import functools
import itertools
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from crnn_jax import decode, host
from crnn_jax.decode import beam as beam_search
from crnn_jax.decode import topk

NEG_INF = -math.inf


def log_softmax(logits: np.ndarray) -> np.ndarray:
  """Float64 log-softmax of float32-rounded logits, as the decoders see them."""
  x = np.asarray(logits, np.float32).astype(np.float64)
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def logaddexp(a: float, b: float) -> float:
  if a == NEG_INF:
    return b
  if b == NEG_INF:
    return a
  return max(a, b) + math.log1p(math.exp(-abs(a - b)))


def reference_prefix_beam_search(
    log_probs,
    paddings,
    *,
    beam_size,
    top_k=1,
    blank_id=0,
    max_length=None,
    lm_table=None,
    alpha=0.0,
    beta=0.0,
    lexicon=None,
):
  """Plain prefix beam search over a dict of prefix tuples, independent of the JAX code.

  Args:
    log_probs: (T, K) float64 log-probabilities of one example.
    paddings: (T,) 1.0 for a padded frame (skipped).
    lexicon: optional set of words (tuples); prefixes must stay prefixes of a word and
      only whole words are returned.

  Returns:
    (hypotheses, margin): up to top_k (prefix, score) pairs with finite score, best
    first, and the smallest gap in rank between the last kept and the first dropped
    candidate over all pruning steps and the final top_k cut (inf when nothing was cut).
    A tiny margin means float32 rounding may legitimately pick another set.
  """
  num_frames, num_classes = log_probs.shape
  max_length = num_frames if max_length is None else max_length
  context = 0 if lm_table is None else round(math.log(lm_table.shape[0], num_classes))
  word_prefixes = None
  if lexicon is not None:
    word_prefixes = {w[:i] for w in lexicon for i in range(len(w) + 1)}

  def lm_score(prefix, end=False):
    if lm_table is None:
      return 0.0
    padded = (blank_id,) * context + prefix
    targets = list(prefix) + ([blank_id] if end else [])
    total = 0.0
    for i, target in enumerate(targets):
      history = padded[i : i + context]
      row = sum(h * num_classes**j for j, h in enumerate(reversed(history)))
      total += lm_table[row, target]
    return total

  def rank(prefix, probs, end=False):
    pb, pnb = probs
    value = logaddexp(pb, pnb) + beta * len(prefix)
    if lm_table is not None:
      value += alpha * lm_score(prefix, end)
    return value

  margin = math.inf

  def cut(ranked, keep):
    nonlocal margin
    values = [r for r, _ in ranked]
    if len(values) > keep and values[keep - 1] > NEG_INF:
      margin = min(margin, values[keep - 1] - values[keep])

  beams = {(): (0.0, NEG_INF)}
  for t in range(num_frames):
    if paddings[t] > 0.5:
      continue
    lp = log_probs[t]
    candidates = {}

    def add(prefix, pb, pnb):
      old_pb, old_pnb = candidates.get(prefix, (NEG_INF, NEG_INF))
      candidates[prefix] = (logaddexp(old_pb, pb), logaddexp(old_pnb, pnb))

    for prefix, (pb, pnb) in beams.items():
      total = logaddexp(pb, pnb)
      add(prefix, total + lp[blank_id], pnb + lp[prefix[-1]] if prefix else NEG_INF)
      if len(prefix) == max_length:
        continue
      for c in range(num_classes):
        grown = prefix + (c,)
        if c == blank_id or (word_prefixes is not None and grown not in word_prefixes):
          continue
        if prefix and c == prefix[-1]:
          add(grown, NEG_INF, pb + lp[c])
        else:
          add(grown, NEG_INF, total + lp[c])
    ranked = sorted(((rank(p, v), p) for p, v in candidates.items()), reverse=True)
    cut(ranked, beam_size)
    beams = {p: candidates[p] for _, p in ranked[:beam_size]}

  final = [(rank(p, v, end=True), p) for p, v in beams.items()]
  if lexicon is not None:
    final = [(r, p) for r, p in final if p in lexicon]
  final.sort(reverse=True)
  cut(final, top_k)
  return [(p, r) for r, p in final[:top_k] if r > NEG_INF], margin


def brute_force(log_probs, blank_id=0):
  """{label sequence: log P} by enumerating every alignment of (T, K) log-probs."""
  num_frames, num_classes = log_probs.shape
  probs = {}
  for path in itertools.product(range(num_classes), repeat=num_frames):
    labels = tuple(c for i, c in enumerate(path) if c != blank_id and (i == 0 or c != path[i - 1]))
    score = sum(log_probs[t, c] for t, c in enumerate(path))
    probs[labels] = logaddexp(probs.get(labels, NEG_INF), score)
  return probs


def hypotheses(result, example):
  """The finite (sequence, score) pairs of one example of a beam-search result."""
  tokens, lengths, scores = (np.asarray(x[example]) for x in result)
  return [
      (tuple(int(i) for i in tokens[r, : lengths[r]]), float(scores[r]))
      for r in range(len(scores))
      if scores[r] > NEG_INF
  ]


def random_logits(rng, batch, frames, classes, peaked_fraction=0.5):
  """Flat (normal) logits for part of the batch, peaked (one-hot * 6 + noise) for the rest."""
  logits = rng.normal(size=(batch, frames, classes))
  peaked = rng.random(batch) < peaked_fraction
  hot = np.eye(classes)[rng.integers(0, classes, size=(batch, frames))] * 6.0
  logits = np.where(peaked[:, None, None], hot + 0.7 * logits, logits)
  return logits.astype(np.float32)


def held_logits(rng, batch, frames, classes):
  """CTC-like logits: labels held for 1-3 frames with a close runner-up, plus noise.

  Consecutive frames then favour the same labels, so the beams' last labels are often
  among a frame's likeliest: the case that pruning labels has to get right.
  """
  held = np.repeat(rng.integers(0, classes, size=(batch, frames)), 3, axis=1)
  starts = rng.integers(0, 3, size=batch)
  labels = np.stack([held[b, starts[b] : starts[b] + frames] for b in range(batch)])
  runner_up = rng.integers(0, classes, size=(batch, frames))
  logits = 3.0 * np.eye(classes)[labels] + 2.5 * np.eye(classes)[runner_up]
  return (logits + rng.normal(size=logits.shape)).astype(np.float32)


def trailing_paddings(rng, batch, frames):
  lengths = rng.integers(0, frames + 1, size=batch)
  return (np.arange(frames)[None, :] >= lengths[:, None]).astype(np.float32)


# ----------------------------------------------------------------------------------------
# Brute force on tiny inputs.
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("blank_id", [0, 2])
def test_wide_beam_equals_brute_force(blank_id):
  rng = np.random.default_rng(blank_id)
  batch, frames, classes = 6, 5, 3
  logits = random_logits(rng, batch, frames, classes)
  paddings = np.zeros((batch, frames), np.float32)
  paddings[1, 3:] = 1.0  # three real frames
  paddings[2, 0] = 1.0  # a padded frame in front
  logits[1, 3:] = 50.0 * rng.normal(size=(frames - 3, classes))  # garbage under padding
  # At most 1 + 2 + ... + 2**5 = 63 prefixes exist, so a beam of 64 never prunes.
  result = decode.prefix_beam_search(logits, paddings, beam_size=64, top_k=64, blank_id=blank_id)
  log_probs = log_softmax(logits)
  for b in range(batch):
    expected = brute_force(log_probs[b][paddings[b] < 0.5], blank_id)
    got = dict(hypotheses(result, b))
    assert got.keys() == expected.keys()
    for labels, score in expected.items():
      np.testing.assert_allclose(got[labels], score, atol=1e-5)
    best = max(expected, key=expected.get)
    assert hypotheses(result, b)[0][0] == best


def test_sequence_log_probs_equals_brute_force_and_optax():
  rng = np.random.default_rng(1)
  batch, frames, classes = 4, 5, 3
  logits = random_logits(rng, batch, frames, classes)
  paddings = trailing_paddings(rng, batch, frames)
  labels = np.array([[1, 2, -1], [1, 1, -1], [2, -1, -1], [1, 2, 1]], np.int32)
  got = decode.sequence_log_probs(logits, paddings, labels)
  log_probs = log_softmax(logits)
  for b in range(batch):
    expected = brute_force(log_probs[b][paddings[b] < 0.5])
    want = expected.get(tuple(labels[b][labels[b] >= 0]), NEG_INF)
    np.testing.assert_allclose(got[b], want, atol=1e-5)
  # Same as optax where an alignment exists (optax returns ~1e5 otherwise).
  loss = optax.ctc_loss(
      jnp.asarray(logits),
      jnp.asarray(paddings),
      np.maximum(labels, 0),
      (labels < 0).astype(np.float32),
  )
  feasible = np.isfinite(np.asarray(got))
  assert feasible.sum() >= 2
  np.testing.assert_allclose(np.asarray(got)[feasible], -np.asarray(loss)[feasible], atol=1e-4)


# ----------------------------------------------------------------------------------------
# Against the NumPy reference on thousands of random inputs.
# ----------------------------------------------------------------------------------------


def assert_matches_reference(result, log_probs, paddings, **kwargs):
  """Every example matches the reference unless its pruning margin is below float32 noise."""
  skipped = 0
  for b in range(log_probs.shape[0]):
    expected, margin = reference_prefix_beam_search(log_probs[b], paddings[b], **kwargs)
    if margin < 1e-4:
      skipped += 1
      continue
    got = hypotheses(result, b)
    assert [p for p, _ in got] == [p for p, _ in expected], f"example {b}"
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], atol=1e-4)
  assert skipped <= 0.01 * log_probs.shape[0]


# With K > beam_size + 2 the search only tries each frame's likeliest labels, fewer for
# lower-ranked beams; "held" inputs stress that pruning. Both paths are checked.
@pytest.mark.parametrize(
    "batch, classes, beam_size, held, max_length",
    [
        (2000, 5, 4, False, None),
        (1000, 12, 3, False, None),
        (1000, 12, 6, True, None),
        (500, 12, 3, False, 3),
    ],
)
def test_beam_search_matches_reference_on_random_inputs(
    batch, classes, beam_size, held, max_length
):
  rng = np.random.default_rng(classes + beam_size)
  frames = 8
  make = held_logits if held else random_logits
  logits = make(rng, batch, frames, classes)
  paddings = trailing_paddings(rng, batch, frames)
  logits = np.where(paddings[..., None] > 0, 30.0 * logits, logits)  # garbage when padded
  kwargs = dict(beam_size=beam_size, top_k=3, max_length=max_length)
  result = decode.prefix_beam_search(logits, paddings, **kwargs)
  assert_matches_reference(result, log_softmax(logits), paddings, **kwargs)


def test_cpu_search_variants_match_reference_and_each_other(monkeypatch):
  # On CPU a small batch is searched in parts, one per core (beam_search._num_chunks), and a
  # step keeps its best candidates with lax.top_k for a few examples but picks them one
  # by one for many (topk._top_k). Every variant must give the same beams.
  rng = np.random.default_rng(14)
  batch, frames, classes = 32, 9, 12
  logits = held_logits(rng, batch, frames, classes)
  paddings = trailing_paddings(rng, batch, frames)
  kwargs = dict(beam_size=4, top_k=2)
  on_cpu = jax.default_backend() == "cpu"
  assert beam_search._num_chunks(batch) == (min(2, host.usable_cores()) if on_cpu else 1)
  assert batch < topk._MIN_ROWS  # lax.top_k in every step
  split = decode.prefix_beam_search(logits, paddings, **kwargs)
  monkeypatch.setattr(beam_search, "_num_chunks", lambda batch: 1)
  one_loop = decode.prefix_beam_search.__wrapped__(logits, paddings, **kwargs)
  monkeypatch.setattr(topk, "_MIN_ROWS", 1)
  picked = decode.prefix_beam_search.__wrapped__(logits, paddings, **kwargs)
  for result in (split, one_loop, picked):
    assert_matches_reference(result, log_softmax(logits), paddings, **kwargs)
    np.testing.assert_array_equal(result.tokens, one_loop.tokens)
    np.testing.assert_allclose(result.scores, one_loop.scores, atol=1e-5)  # rounding


def test_top_k_by_picking_equals_lax_top_k_with_ties_zeros_and_infinities():
  # On CPU the search picks its top entries one by one (topk._top_k) instead of
  # lax.top_k; the results must be the same, order of ties included.
  rng = np.random.default_rng(17)
  values = rng.normal(size=(6, 40, 70)).astype(np.float32)
  values[:, :12] = np.round(values[:, :12])  # many ties
  values[:, 12:20] = -np.inf
  values[:, 20:24] = 0.0
  values[:, 24:28] = -0.0
  values[:, 28:] = np.where(rng.random((6, 12, 70)) < 0.5, -np.inf, values[:, 28:])
  for axis, k in [(1, 11), (1, 30), (0, 6), (2, 10)]:
    rows = values.size // values.shape[axis]
    assert rows >= topk._MIN_ROWS and k <= topk._MAX_PICKS  # the picking path
    top, index = topk._top_k(jnp.asarray(values), k, axis=axis)
    expected_top, expected_index = jax.lax.top_k(np.moveaxis(values, axis, -1), k)
    np.testing.assert_array_equal(np.moveaxis(np.asarray(index), axis, -1), expected_index)
    np.testing.assert_array_equal(np.moveaxis(np.asarray(top), axis, -1), expected_top)
    # -0.0 before 0.0 would fail the index check; compare signs of the zeros too.
    assert np.array_equal(
        np.signbit(np.moveaxis(np.asarray(top), axis, -1)), np.signbit(expected_top)
    )


def test_beam_search_with_lm_and_max_length_matches_reference():
  rng = np.random.default_rng(3)
  batch, frames, classes = 300, 8, 5
  logits = random_logits(rng, batch, frames, classes)
  paddings = trailing_paddings(rng, batch, frames)
  corpus = [rng.integers(1, classes, size=rng.integers(1, 6)).tolist() for _ in range(40)]
  lm = decode.build_char_ngram(corpus, num_classes=classes, order=3)
  kwargs = dict(beam_size=5, top_k=2, max_length=4, alpha=0.8, beta=0.4)
  result = decode.prefix_beam_search(logits, paddings, lm=lm, **kwargs)
  assert_matches_reference(
      result,
      log_softmax(logits),
      paddings,
      lm_table=np.asarray(lm.log_probs, np.float64),
      **kwargs,
  )
  assert int(np.asarray(result.lengths).max()) <= 4


def test_lexicon_beam_search_matches_reference_and_emits_only_words():
  rng = np.random.default_rng(4)
  batch, frames, classes = 300, 8, 5
  words = {tuple(rng.integers(1, classes, size=rng.integers(1, 5)).tolist()) for _ in range(25)}
  trie = decode.build_trie(sorted(words), num_classes=classes)
  logits = random_logits(rng, batch, frames, classes)
  paddings = trailing_paddings(rng, batch, frames)
  result = decode.lexicon_beam_search(logits, paddings, trie, beam_size=4, top_k=3)
  for b in range(batch):
    for labels, _ in hypotheses(result, b):
      assert labels in words
  assert_matches_reference(
      result, log_softmax(logits), paddings, beam_size=4, top_k=3, lexicon=words
  )


def test_wide_lexicon_beam_search_equals_exact_lexicon_decode():
  rng = np.random.default_rng(5)
  batch, frames, classes = 64, 7, 4
  words = sorted(
      {tuple(rng.integers(1, classes, size=rng.integers(1, 5)).tolist()) for _ in range(15)}
  )
  trie = decode.build_trie(words, num_classes=classes)
  num_nodes = trie.children.shape[0]
  logits = random_logits(rng, batch, frames, classes)
  paddings = np.zeros((batch, frames), np.float32)
  # With a beam as large as the trie nothing is pruned, so the search is exact.
  searched = decode.lexicon_beam_search(logits, paddings, trie, beam_size=num_nodes)
  candidates = np.full((len(words), 4), -1, np.int32)
  for i, w in enumerate(words):
    candidates[i, : len(w)] = w
  exact = decode.lexicon_decode(logits, paddings, candidates)
  found = np.asarray(searched.scores[:, 0]) > NEG_INF
  np.testing.assert_array_equal(found, np.asarray(exact.scores) > NEG_INF)
  np.testing.assert_allclose(searched.scores[found, 0], exact.scores[found], atol=1e-5)
  np.testing.assert_array_equal(searched.tokens[found, 0, :4], exact.tokens[found])


# ----------------------------------------------------------------------------------------
# Greedy decoding, padding invariance, "book".
# ----------------------------------------------------------------------------------------


def test_greedy_equals_argmax_collapse():
  rng = np.random.default_rng(6)
  batch, frames, classes = 200, 12, 4
  logits = random_logits(rng, batch, frames, classes)
  paddings = trailing_paddings(rng, batch, frames)
  paddings[:20] = rng.random((20, frames)) < 0.3  # padded frames anywhere
  result = decode.greedy_decode(logits, paddings)
  log_probs = log_softmax(logits)
  for b in range(batch):
    path = np.argmax(log_probs[b], axis=-1)[paddings[b] < 0.5]
    labels = [c for i, c in enumerate(path) if c != 0 and (i == 0 or c != path[i - 1])]
    n = int(result.lengths[b])
    assert np.asarray(result.tokens[b, :n]).tolist() == labels
    assert np.all(np.asarray(result.tokens[b, n:]) == -1)
    want = log_probs[b].max(axis=-1)[paddings[b] < 0.5].sum()
    np.testing.assert_allclose(result.scores[b], want, atol=1e-4)


def test_repeats_separated_by_blank_are_kept():
  charset = "bok"  # ids: blank 0, b 1, o 2, k 3
  frames = [1, 2, 2, 0, 2, 3]  # b o o - o k
  logits = 8.0 * np.eye(4, dtype=np.float32)[frames][None]
  paddings = np.zeros((1, len(frames)), np.float32)
  greedy = decode.greedy_decode(logits, paddings)
  beam = decode.prefix_beam_search(logits, paddings, beam_size=5)
  assert decode.to_strings(greedy.tokens, greedy.lengths, charset) == ["book"]
  assert decode.to_strings(beam.tokens, beam.lengths, charset) == [["book"]]
  no_blank = 8.0 * np.eye(4, dtype=np.float32)[[1, 2, 2, 2, 3]][None]
  greedy = decode.greedy_decode(no_blank, np.zeros((1, 5), np.float32))
  assert decode.to_strings(greedy.tokens, greedy.lengths, charset) == ["bok"]


def test_garbage_in_padded_frames_changes_nothing():
  rng = np.random.default_rng(7)
  batch, frames, classes = 16, 7, 5  # the shape of the tests below, to share compilations
  logits = random_logits(rng, batch, frames, classes)
  paddings = trailing_paddings(rng, batch, frames)
  paddings[:4, 2] = 1.0  # and some padded frames inside the sequence
  garbage = np.where(paddings[..., None] > 0, 100.0 * rng.normal(size=logits.shape), logits)
  garbage = garbage.astype(np.float32)
  trie = decode.build_trie([[1, 2], [3], [1, 4, 4], [2, 2, 3]], num_classes=classes)
  lm = decode.build_char_ngram([[1, 2], [3, 1]], num_classes=classes, order=2)
  candidates = np.array([[1, 2, -1], [3, -1, -1], [2, 2, 3]], np.int32)
  decoders = [
      lambda x: decode.greedy_decode(x, paddings),
      lambda x: decode.prefix_beam_search(x, paddings, beam_size=3, top_k=2),
      lambda x: decode.prefix_beam_search(x, paddings, beam_size=6, lm=lm, alpha=0.5),
      lambda x: decode.lexicon_beam_search(x, paddings, trie, beam_size=6, top_k=2),
      lambda x: decode.lexicon_decode(x, paddings, candidates),
  ]
  for run in decoders:
    for clean, dirty in zip(run(logits), run(garbage)):
      np.testing.assert_array_equal(clean, dirty)


# ----------------------------------------------------------------------------------------
# Lexicon mode and the n-gram model.
# ----------------------------------------------------------------------------------------


def test_lexicon_decode_returns_exact_best_candidate():
  rng = np.random.default_rng(8)
  batch, frames, classes = 5, 5, 3
  logits = random_logits(rng, batch, frames, classes)
  paddings = np.zeros((batch, frames), np.float32)
  paddings[0, 4] = 1.0
  candidates = rng.integers(1, classes, size=(batch, 6, 3)).astype(np.int32)
  candidates[:, :, 2] = np.where(rng.random((batch, 6)) < 0.5, -1, candidates[:, :, 2])
  candidates[:, 5] = -1  # an unused slot
  result = decode.lexicon_decode(logits, paddings, candidates)
  log_probs = log_softmax(logits)
  for b in range(batch):
    exact = brute_force(log_probs[b][paddings[b] < 0.5])
    want = [exact.get(tuple(c[c >= 0]), NEG_INF) for c in candidates[b, :5]] + [NEG_INF]
    np.testing.assert_allclose(result.candidate_scores[b], want, atol=1e-5)
    assert int(result.index[b]) == int(np.argmax(want))
    np.testing.assert_array_equal(result.tokens[b], candidates[b, np.argmax(want)])
  # A shared (N, U) lexicon is the same as repeating it per example.
  shared = decode.lexicon_decode(logits, paddings, candidates[0])
  repeated = np.broadcast_to(candidates[0], candidates.shape)
  repeated = decode.lexicon_decode(logits, paddings, repeated)
  np.testing.assert_array_equal(shared.index, repeated.index)


def test_char_ngram_probabilities():
  # Unigram over "aab": counts a=2, b=1, end=1 (4 tokens, 3 types); discount 0.75 and a
  # uniform base 1/3 give a: (1.25 + 0.75) / 4 and b, end: (0.25 + 0.75) / 4.
  lm = decode.build_char_ngram(["aab"], num_classes=3, order=1, charset="ab")
  np.testing.assert_allclose(np.exp(lm.log_probs[0]), [0.25, 0.5, 0.25], atol=1e-6)
  lm = decode.build_char_ngram("cat\nhat\ncab", num_classes=6, order=3, charset="cathb")
  table = np.asarray(lm.log_probs)
  assert table.shape == (36, 6)
  np.testing.assert_allclose(np.exp(table).sum(axis=1), 1.0, atol=1e-5)
  assert np.all(np.isfinite(table))
  # After "ca", "t" (seen once) beats "h" (never seen there).
  row = 1 * 6 + 2  # context (c=1, a=2), most recent label lowest
  assert table[row, 3] > table[row, 4]


def test_lm_fusion_picks_the_word_the_lm_knows():
  charset = "aotc"  # ids a 1, o 2, t 3, c 4
  # "c ? t" with the middle frame torn between a and o, o slightly ahead.
  probs = (
      np.array(
          [[0.05, 0.0, 0.0, 0.0, 0.95], [0.02, 0.48, 0.5, 0.0, 0.0], [0.05, 0.0, 0.0, 0.95, 0.0]]
      )
      + 1e-4
  )
  logits = np.log(probs).astype(np.float32)[None]
  paddings = np.zeros((1, 3), np.float32)
  plain = decode.prefix_beam_search(logits, paddings, beam_size=4)
  assert decode.to_strings(plain.tokens, plain.lengths, charset) == [["cot"]]
  lm = decode.build_char_ngram(["cat", "at", "ca"], num_classes=5, order=2, charset=charset)
  fused = decode.prefix_beam_search(logits, paddings, beam_size=4, lm=lm, alpha=1.0)
  assert decode.to_strings(fused.tokens, fused.lengths, charset) == [["cat"]]


# ----------------------------------------------------------------------------------------
# jit, vmap, sharding, dtypes, strings, errors, imports.
# ----------------------------------------------------------------------------------------


def test_vmap_and_outer_jit_match_direct_calls():
  rng = np.random.default_rng(9)
  logits = random_logits(rng, 32, 7, 5).reshape(2, 16, 7, 5)
  paddings = trailing_paddings(rng, 32, 7).reshape(2, 16, 7)
  search = functools.partial(decode.prefix_beam_search, beam_size=3, top_k=2)
  mapped = jax.vmap(search)(logits, paddings)
  jitted = jax.jit(jax.vmap(decode.greedy_decode))(logits, paddings)
  for i in range(2):
    direct = search(logits[i], paddings[i])
    for a, b in zip(mapped, direct):
      np.testing.assert_array_equal(a[i], b)
    for a, b in zip(jitted, decode.greedy_decode(logits[i], paddings[i])):
      np.testing.assert_array_equal(a[i], b)


def test_sharded_batch_matches_single_device():
  devices = np.array(jax.devices())
  assert devices.size == 8
  rng = np.random.default_rng(10)
  logits = random_logits(rng, 16, 7, 5)
  paddings = trailing_paddings(rng, 16, 7)
  sharding = NamedSharding(Mesh(devices, ("batch",)), PartitionSpec("batch"))
  sharded = jax.device_put((logits, paddings), sharding)
  for run in [
      decode.greedy_decode,
      functools.partial(decode.prefix_beam_search, beam_size=3, top_k=2),
  ]:
    for a, b in zip(run(*sharded), run(logits, paddings)):
      np.testing.assert_array_equal(a, b)


def test_bfloat16_logits_are_decoded_in_float32():
  rng = np.random.default_rng(11)
  logits = jnp.asarray(random_logits(rng, 16, 7, 5), jnp.bfloat16)
  paddings = trailing_paddings(rng, 16, 7)
  search = functools.partial(decode.prefix_beam_search, beam_size=3, top_k=2)
  low = search(logits, paddings)
  high = search(logits.astype(jnp.float32), paddings)
  assert low.scores.dtype == jnp.float32
  for a, b in zip(low, high):
    np.testing.assert_array_equal(a, b)


def test_to_strings_with_string_and_object_charsets():
  class Charset:

    def decode(self, ids):
      return "".join("xyz"[i - 1] for i in ids)

  tokens = np.array([[[1, 2, -1], [3, -1, -1]]])
  lengths = np.array([[2, 1]])
  assert decode.to_strings(tokens, lengths, "xyz") == [["xy", "z"]]
  assert decode.to_strings(tokens, lengths, Charset()) == [["xy", "z"]]
  assert decode.to_strings(np.array([1, 3, -1]), np.array(2), "xyz") == "xz"  # scalar
  with pytest.raises(ValueError, match="tokens"):
    decode.to_strings(np.array([[4]]), np.array([1]), "xyz")
  with pytest.raises(ValueError, match="id 0 has no character"):  # the blank
    decode.to_strings(np.array([[1, 0]]), np.array([2]), "xyz")
  with pytest.raises(ValueError, match="charset"):
    decode.to_strings(tokens, lengths, 3)
  trie = decode.build_trie(["xy", "x"], num_classes=4, charset="xyz")
  assert np.asarray(trie.is_word).sum() == 2
  with pytest.raises(ValueError, match="words"):
    decode.build_trie(["xq"], num_classes=4, charset="xyz")


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda x, p: decode.greedy_decode(x[0], p), "logits"),
        (lambda x, p: decode.greedy_decode(x, p[:, :3]), "logit_paddings"),
        (lambda x, p: decode.greedy_decode(x, p, blank_id=5), "blank_id"),
        (lambda x, p: decode.prefix_beam_search(x, p, beam_size=0), "beam_size"),
        (lambda x, p: decode.prefix_beam_search(x, p, beam_size=2, top_k=3), "top_k"),
        (lambda x, p: decode.prefix_beam_search(x, p, beam_size=2, blank_id=-1), "blank_id"),
        (lambda x, p: decode.prefix_beam_search(x, p, beam_size=2, max_length=0), "max_length"),
        (
            lambda x, p: decode.prefix_beam_search(
                x, p, beam_size=2, lm=decode.CharNgramLM(jnp.zeros((7, 5)))
            ),
            "lm.log_probs",
        ),
        (
            lambda x, p: decode.lexicon_beam_search(
                x, p, decode.Trie(jnp.zeros((3, 4), jnp.int32), jnp.zeros(3, bool)), beam_size=2
            ),
            "trie.children",
        ),
        (lambda x, p: decode.lexicon_decode(x, p, np.zeros((3, 2, 2), np.int32)), "candidates"),
        (lambda x, p: decode.sequence_log_probs(x, p, np.zeros((2, 2), np.float32)), "labels"),
    ],
)
def test_bad_static_inputs_raise_value_error_naming_the_argument(call, name):
  logits = np.zeros((2, 4, 5), np.float32)
  paddings = np.zeros((2, 4), np.float32)
  with pytest.raises(ValueError, match=name.replace(".", r"\.")):
    call(logits, paddings)


def test_import_pulls_in_no_training_stack():
  code = (
      "import sys, crnn_jax.decode; "
      "heavy = ('flax', 'optax', 'orbax', 'tensorflow_datasets', 'tensorflow'); "
      "print([m for m in sys.modules if m.split('.')[0] in heavy])"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"

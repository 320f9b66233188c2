"""Benchmark: crnn_jax.decode prefix beam search against CTC beam decoders in Python, C++ and Rust.

Decodes the same inputs with beam 10, blank id 0 and no language model, and prints, per
decoder, sequences per wall second and per CPU second of this process, the latency of one
sequence decoded alone (B=1), crnn_jax's speed ratio over it, and how often its top-1
text equals crnn_jax's:

- crnn_jax.decode.prefix_beam_search, jitted and warm: the whole batch at once, and one
  sequence per call for the latency (timed up to strings on the host);
- pyctcdecode (Python; `pip install --no-deps pyctcdecode pygtrie`, see docs/decode.md),
  one sequence at a time as it is meant to be used, with its default pruning;
- fast-ctc-decode (Rust; the `[bench]` extra), `beam_search` on the probabilities, one
  sequence at a time, nothing pruned (`beam_cut_threshold=0`);
- flashlight-text (C++, the decoder behind torchaudio's `ctc_decoder`; the `[bench]`
  extra), `LexiconFreeDecoder` with a zero LM, summing alignments (`log_add`, as a prefix
  beam search does), every token tried per frame, torchaudio's default beam threshold 50;
- the plain NumPy/Python reference search from tests/test_decode.py, once, for agreement.

A missing peer is skipped with a note. TensorFlow's `ctc_beam_search_decoder` is not
compared: TensorFlow is a ~600 MB install, and with it in the environment TFDS, which
this project uses without TensorFlow, would import it. torchaudio's `ctc_decoder` is
flashlight-text's decoder; torchaudio has no release matching torch 2.13.

Inputs, from the most to the least like real use:

- "trained" (the headline): the log-probabilities of the shipped pretrained model
  (`crnn_jax.Recognizer.pretrained()`) on 256 words rendered by
  `crnn_jax.data.render.Renderer(seed=0)` (difficulty 1), resized as the recognizer
  does and padded to width 128: B=256, T=31, K=63, padded frames where a word is narrow;
- "random": standard normal logits of the same shape. Flat posteriors are pyctcdecode's
  worst case (its pruning keeps almost every label), not what a trained model gives;
- a speech-like shape, B=32, T=400, K=32 (lengths T/2 to T), with no trained model
  behind it: "peaked (synthetic)", labels held 1-3 frames between blank runs with noise
  and near-miss rivals, and "random".

Where pyctcdecode's top-1 differs from crnn_jax's, it is rerun with its pruning off; for
every peer's differences, both answers are scored exactly (`decode.sequence_log_probs`) to
say which is more probable.

The timed decoders run in alternating rounds (the machine's speed drifts by up to 2x
within an hour); crnn_jax's ratio over a peer is the median of the per-round ratios. The
last lines give crnn_jax's wall-clock ratio over each peer per case. Run from the
repository root (on an idle 2-core machine it should take about four minutes, compilation
included; an estimate):

    .venv/bin/python benchmarks/decode.py

Never part of the test run.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import os
import pathlib
import platform
import statistics
import string
import time
from importlib.metadata import PackageNotFoundError, version

import jax
import numpy as np

from crnn_jax import cli, decode

BEAM_SIZE = 10
# flashlight-text prunes hypotheses scoring this far below the best (torchaudio's default).
FLASHLIGHT_BEAM_THRESHOLD = 50.0
CRNN_SHAPE, SPEECH_SHAPE = (256, 31, 63), (32, 400, 32)
# 31 characters, ids 1..31; no space (a word break for pyctcdecode).
SPEECH_ALPHABET = string.ascii_lowercase + "'-.,?"
RENDER_SEED = 0


def load_reference():
  """The NumPy reference search, from the test file (one implementation, not two)."""
  path = pathlib.Path(__file__).resolve().parents[1] / "tests" / "test_decode.py"
  spec = importlib.util.spec_from_file_location("_decode_reference", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.reference_prefix_beam_search


def synthetic_inputs(kind: str, shape: tuple[int, int, int], seed: int):
  """Logits `(B, T, K)` float32 and paddings `(B, T)`: "random" or "peaked (synthetic)"."""
  batch, frames, classes = shape
  rng = np.random.default_rng(seed)
  if frames > 100:  # speech: utterances of different lengths in one padded batch
    lengths = rng.integers(frames // 2, frames + 1, size=batch)
  else:
    lengths = np.full(batch, frames)
  paddings = (np.arange(frames)[None, :] >= lengths[:, None]).astype(np.float32)
  noise = rng.normal(size=(batch, frames, classes))
  if kind == "random":
    return noise.astype(np.float32), paddings
  # Peaked: per example, labels separated by blank runs, each held 1-3 frames.
  frame_labels = np.zeros((batch, frames), np.int64)
  for b in range(batch):
    t = 0
    while t < frames:
      t += rng.integers(0, 4)  # blanks
      hold = rng.integers(1, 4)
      frame_labels[b, t : t + hold] = rng.integers(1, classes)
      t += hold
  logits = 9.0 * np.eye(classes)[frame_labels] + 1.5 * noise
  # A near-miss label (or blank) on a quarter of the frames keeps the search honest.
  rival = np.eye(classes)[rng.integers(0, classes, size=(batch, frames))]
  near = rng.random((batch, frames, 1)) < 0.25
  logits += np.where(near, 7.5 * rival, 0.0)
  return logits.astype(np.float32), paddings


def trained_inputs(batch: int, width: int = 128):
  """Logits `(B, T, 63)` and paddings of the pretrained model on rendered words, with its
  alphabet (character of id i + 1 at position i)."""
  from crnn_jax import Recognizer
  from crnn_jax.data import batching, preprocess, render

  recognizer = Recognizer.pretrained()
  renderer = render.Renderer(seed=RENDER_SEED, height=recognizer.height)
  arrays = [
      preprocess.resize(
          renderer.render(i)[0],
          height=recognizer.height,
          max_width=width,
          mode=recognizer.resize_mode,
      )
      for i in range(batch)
  ]
  host = batching.assemble(arrays, width, batch)
  logits, paddings = jax.jit(lambda v, x, w: recognizer.model.apply(v, x, w, train=False))(
      recognizer.variables, host["images"], host["widths"]
  )
  return np.asarray(logits, np.float32), np.asarray(paddings, np.float32), recognizer.charset.chars


def log_softmax(logits: np.ndarray) -> np.ndarray:
  x = logits - logits.max(axis=-1, keepdims=True)
  return (x - np.log(np.exp(x).sum(axis=-1, keepdims=True))).astype(np.float32)


def exact_log_probs(logits, paddings, texts, alphabet):
  """Exact CTC log-probabilities of some texts for one example (forward algorithm)."""
  labels = np.full((1, len(texts), logits.shape[0]), -1, np.int32)
  for i, text in enumerate(texts):
    labels[0, i, : len(text)] = [alphabet.index(c) + 1 for c in text]
  scores = decode.sequence_log_probs(logits[None], paddings[None], labels)
  return np.asarray(scores[0])


class Clock:
  """Wall-clock and process CPU seconds of a block; CPU time is steadier on a shared CPU."""

  def __enter__(self):
    self.wall, self.cpu = time.perf_counter(), time.process_time()
    return self

  def __exit__(self, *exc):
    self.wall = time.perf_counter() - self.wall
    self.cpu = time.process_time() - self.cpu


# One jitted search for every case: inputs of the same shape compile once.
_search = jax.jit(functools.partial(decode.prefix_beam_search, beam_size=BEAM_SIZE))


class JaxDecoder:
  """crnn_jax's search, jitted: the whole batch, or one sequence per call (latency)."""

  name = "crnn_jax.decode (jit)"

  def __init__(self, logits, paddings, alphabet, repeats: int):
    self.alphabet, self.repeats = alphabet, repeats
    self.batch = jax.device_put((logits, paddings))
    self.singles = [jax.device_put((logits[b : b + 1], paddings[b : b + 1])) for b in range(4)]
    self._run(*self.batch)  # compile both shapes
    self._run(*self.singles[0])

  def _run(self, logits, paddings) -> list[str]:
    result = _search(logits, paddings)
    tokens, lengths = jax.device_get((result.tokens[:, 0], result.lengths[:, 0]))
    return decode.to_strings(tokens, lengths, self.alphabet)

  def throughput(self, count: int):
    """Median (wall, CPU) seconds per sequence over ``repeats`` runs of the whole batch,
    and its top-1 strings (``count`` is unused: crnn_jax decodes every example)."""
    clocks = []
    for _ in range(self.repeats):
      with Clock() as clock:
        texts = self._run(*self.batch)
      clocks.append(clock)
    n = len(texts)
    return (
        statistics.median(c.wall for c in clocks) / n,
        statistics.median(c.cpu for c in clocks) / n,
    ), texts

  def latency(self, count: int) -> float:
    """Median wall seconds to decode one sequence alone (a B=1 batch), over ``count`` calls
    cycling through four examples."""
    times = []
    for i in range(count):
      with Clock() as clock:
        self._run(*self.singles[i % len(self.singles)])
      times.append(clock.wall)
    return statistics.median(times)


class HostDecoder:
  """A peer that decodes one sequence per call on the host.

  Args:
    name: the row's name.
    fn: ``fn(log_probs (t, K) float32) -> text``, one unpadded sequence.
  """

  def __init__(self, name: str, fn):
    self.name, self.fn = name, fn

  def prepare(self, log_probs, lengths):
    self.sequences = [np.ascontiguousarray(log_probs[b, : lengths[b]]) for b in range(len(lengths))]

  def throughput(self, count: int):
    """(wall, CPU) seconds per sequence over the first ``count``, and their texts."""
    texts, self._times = [], []
    with Clock() as clock:
      for x in self.sequences[:count]:
        start = time.perf_counter()
        texts.append(self.fn(x))
        self._times.append(time.perf_counter() - start)
    return (clock.wall / count, clock.cpu / count), texts

  def latency(self, count: int) -> float:
    """Median wall seconds of one call in the last ``throughput`` run: one sequence
    decoded alone is what every call does (``count`` is unused)."""
    return statistics.median(self._times)


def _package(name: str) -> str | None:
  try:
    return f"{name} {version(name)}"
  except PackageNotFoundError:
    return None


def make_peers(alphabet: str) -> tuple[list[HostDecoder], list[str]]:
  """The installed peers for this alphabet (blank first, id 0), and notes on missing ones.

  The pyctcdecode decoder is returned with an extra ``unpruned`` function."""
  peers, notes = [], []
  classes = len(alphabet) + 1
  # pyctcdecode warns at import that kenlm (for its LMs, unused here) is missing.
  logging.getLogger("pyctcdecode").setLevel(logging.ERROR)
  try:
    from pyctcdecode import build_ctcdecoder

    decoder = build_ctcdecoder([""] + list(alphabet))
    peer = HostDecoder(_package("pyctcdecode"), lambda x: decoder.decode(x, beam_width=BEAM_SIZE))
    peer.unpruned = lambda x: decoder.decode(
        x, beam_width=BEAM_SIZE, token_min_logp=-math.inf, beam_prune_logp=-math.inf
    )
    peers.append(peer)
  except ImportError:
    notes.append("pyctcdecode is missing (pip install --no-deps pyctcdecode pygtrie)")
  try:
    import fast_ctc_decode

    labels = ["_"] + list(alphabet)  # its blank is the first label, as ours
    peers.append(
        HostDecoder(
            _package("fast-ctc-decode"),
            lambda x: fast_ctc_decode.beam_search(
                np.exp(x), labels, beam_size=BEAM_SIZE, beam_cut_threshold=0.0
            )[0],
        )
    )
  except ImportError:
    notes.append("fast-ctc-decode is missing (the [bench] extra)")
  try:
    from flashlight.lib.text import decoder as fl

    options = fl.LexiconFreeDecoderOptions(
        beam_size=BEAM_SIZE,
        beam_size_token=classes,
        beam_threshold=FLASHLIGHT_BEAM_THRESHOLD,
        lm_weight=0.0,
        sil_score=0.0,
        log_add=True,
        criterion_type=fl.CriterionType.CTC,
    )
    # No word boundaries: the silence token is the blank, as for a lexicon-free CTC model.
    search = fl.LexiconFreeDecoder(options, fl.ZeroLM(), 0, 0, [])

    def flashlight_decode(x):
      path = search.decode(x.ctypes.data, x.shape[0], x.shape[1])[0].tokens
      # Its best path, one token per frame (plus one at each end): collapse it.
      return "".join(
          alphabet[t - 1] for i, t in enumerate(path) if t != 0 and (i == 0 or t != path[i - 1])
      )

    peers.append(HostDecoder(_package("flashlight-text"), flashlight_decode))
  except ImportError:
    notes.append("flashlight-text is missing (the [bench] extra)")
  return peers, notes


def time_reference(reference, log_probs, paddings, alphabet, count):
  texts = []
  with Clock() as clock:
    for b in range(count):
      best, _ = reference(log_probs[b].astype(np.float64), paddings[b], beam_size=BEAM_SIZE)
      labels = best[0][0] if best else ()
      texts.append("".join(alphabet[i - 1] for i in labels))
  return (clock.wall / count, clock.cpu / count), texts


def run_case(case, args, reference) -> dict:
  """Times every decoder on one input and prints its rows; returns crnn_jax's wall-clock
  ratio over each peer (median of the per-round ratios)."""
  kind, logits, paddings, alphabet = case
  batch, frames, classes = logits.shape
  shape = "x".join(map(str, logits.shape))
  lengths = (paddings < 0.5).sum(1)
  log_probs = log_softmax(logits)
  count = min(batch, args.host_examples or batch)
  ours = JaxDecoder(logits, paddings, alphabet, args.repeats)
  peers, notes = make_peers(alphabet)
  for peer in peers:
    peer.prepare(log_probs, lengths)
  timed = [ours] + peers

  per_seq = {d.name: [] for d in timed}
  latency = {d.name: [] for d in timed}
  ratios = {p.name: [] for p in peers}
  texts = {}
  for r in range(args.rounds):
    for d in timed if r % 2 == 0 else timed[::-1]:
      seconds, texts[d.name] = d.throughput(count)
      per_seq[d.name].append(seconds)
      latency[d.name].append(d.latency(args.latency_examples))
    for p in peers:
      ratios[p.name].append(
          tuple(per_seq[p.name][-1][i] / per_seq[ours.name][-1][i] for i in (0, 1))
      )
  ref_seconds, ref_texts = time_reference(reference, log_probs, paddings, alphabet, count)
  ours_texts = texts[ours.name][:count]

  def median(pairs, i):
    return statistics.median(p[i] for p in pairs)

  def agreement(name, theirs) -> str:
    differ = [b for b in range(count) if theirs[b] != ours_texts[b]]
    note = f"{count - len(differ)}/{count}"
    if not differ or name == "reference":
      return note
    # Which answer is really more probable; and for pyctcdecode, is pruning the cause?
    ours_better = unpruned_same = 0
    peer = next(p for p in peers if p.name == name)
    for b in differ:
      ours_p, theirs_p = exact_log_probs(
          logits[b], paddings[b], [ours_texts[b], theirs[b]], alphabet
      )
      ours_better += ours_p > theirs_p
      if hasattr(peer, "unpruned"):
        unpruned_same += peer.unpruned(peer.sequences[b]) == ours_texts[b]
    note += f"; of the {len(differ)} others, crnn_jax's is more probable in {ours_better}"
    if hasattr(peer, "unpruned"):
      note += f", and {unpruned_same} agree once it stops pruning"
    return note

  rows = []
  for d in timed:
    wall, cpu = median(per_seq[d.name], 0), median(per_seq[d.name], 1)
    vs = ("-", "-") if d is ours else tuple(f"{median(ratios[d.name], i):.1f}x" for i in (0, 1))
    note = "" if d is ours else agreement(d.name, texts[d.name])
    rows.append((d.name, 1 / wall, 1 / cpu, 1e3 * statistics.median(latency[d.name]), vs, note))
  rows.append(
      (
          "NumPy reference",
          1 / ref_seconds[0],
          1 / ref_seconds[1],
          None,
          tuple(f"{ref_seconds[i] / median(per_seq[ours.name], i):.1f}x" for i in (0, 1)),
          agreement("reference", ref_texts) + " (run once)",
      )
  )
  for name, wall, cpu, ms, vs, note in rows:
    latency_cell = f"{ms:10.3f}" if ms is not None else f"{'-':>10}"
    print(
        f"{kind:<19}{shape:<11}{name:<27}{wall:>9.1f}{cpu:>9.1f}{latency_cell}"
        f"{vs[0]:>12}{vs[1]:>8}   {note}"
    )
  for note in notes:
    print(f"{'':<30}{note}")
  print()
  return {p.name: median(ratios[p.name], 0) for p in peers}


def main(argv=None):
  parser = cli.parser(__doc__, __file__)
  parser.add_argument(
      "--repeats",
      type=int,
      default=3,
      help="timed crnn_jax runs of the batch per round (their median counts)",
  )
  parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per case")
  parser.add_argument(
      "--host-examples",
      type=int,
      default=64,
      help="examples per case for the one-at-a-time decoders and the reference (0: all)",
  )
  parser.add_argument(
      "--latency-examples",
      type=int,
      default=16,
      help="sequences decoded alone (B=1) per decoder and round for the latency",
  )
  parser.add_argument(
      "--cases",
      default="trained,random,speech-peaked,speech-random",
      help="comma-separated inputs to run, in this order: trained, random, speech-peaked, "
      "speech-random",
  )
  args = parser.parse_args(argv)
  cases = args.cases.split(",")
  known = ("trained", "random", "speech-peaked", "speech-random")
  if not set(cases) <= set(known):
    parser.error(f"--cases: expected names from {', '.join(known)}; got {args.cases!r}")

  reference = load_reference()
  print(
      f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs, "
      f"{platform.processor() or platform.machine()}; load average at start "
      f"{os.getloadavg()[0]:.1f} (other processes share the CPU)"
  )
  print(
      f"beam {BEAM_SIZE}, blank id 0, no LM. crnn_jax decodes the whole batch (seq/s) and "
      f"one sequence per call (latency, B=1); the other decoders and the reference take the "
      f"first {args.host_examples or 'all'} examples one by one. The decoders alternate over "
      f"{args.rounds} rounds (crnn_jax: median of {args.repeats} batch runs per round); "
      f"figures are medians over the rounds, ratios the median of the per-round ratios "
      f"(crnn_jax's speed over the row's). '(CPU)': per second of this process's CPU time."
  )
  header = (
      f"{'input':<19}{'B x T x K':<11}{'decoder':<27}{'seq/s':>9}{'(CPU)':>9}"
      f"{'B=1 ms':>10}{'crnn_jax x':>12}{'(CPU)':>8}   top-1 same as crnn_jax"
  )
  print(header)
  print("-" * len(header))
  summary = {}
  for name in cases:
    if name == "trained":
      try:
        logits, paddings, alphabet = trained_inputs(CRNN_SHAPE[0])
      except (ImportError, ValueError) as e:  # the renderer's fonts are the [synth] extra
        print(f"trained: skipped, the renderer needs the [synth] extra's fonts ({e})\n")
        continue
      case = ("trained", logits, paddings, alphabet)
    elif name == "random":
      from crnn_jax.charset import DEFAULT_CHARS

      case = ("random", *synthetic_inputs("random", CRNN_SHAPE, 0), DEFAULT_CHARS)
    else:
      kind = "peaked (synthetic)" if name == "speech-peaked" else "random"
      seed = 1 if name == "speech-peaked" else 0
      case = (kind, *synthetic_inputs(kind, SPEECH_SHAPE, seed), SPEECH_ALPHABET)
    summary[name] = run_case(case, args, reference)
  peers = list(dict.fromkeys(p for ratios in summary.values() for p in ratios))
  for peer in peers:
    print(
        f"crnn_jax / {peer} (wall): "
        + "  ".join(f"{case}={r[peer]:.1f}x" for case, r in summary.items() if peer in r)
    )


if __name__ == "__main__":
  main()

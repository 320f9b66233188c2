"""Benchmark: crnn_jax.decode prefix beam search against pyctcdecode and a NumPy reference.

Decodes the same inputs three ways with beam 10 and no LM, and prints sequences/s, the
speed ratios, and how often the top-1 outputs agree:

- crnn_jax.decode.prefix_beam_search, jitted and warm (timed with the results fetched to
  the host and turned into strings);
- pyctcdecode (optional: `pip install pyctcdecode`; skipped with a note if missing), one
  example at a time as it is meant to be used, with its default pruning;
- the plain NumPy/Python reference search from tests/test_decode.py.

Two shapes: the CRNN model's (B=256, T=31, K=63) and a speech-like one (B=32, T=400,
K=32, lengths from T/2 to T). Two kinds of input: "random" (flat: standard normal logits)
and "real-looking" (peaked: a random label sequence aligned over the frames with blanks,
plus noise and frequent near-miss labels). Where pyctcdecode's top-1 differs from ours,
it is rerun with its pruning switched off to see whether pruning caused the difference.

crnn_jax and pyctcdecode run in alternating rounds, because this machine's speed drifts by
up to 2x within an hour; the last line gives crnn_jax's median per-round ratio for each
case. Run from the repository root (about two minutes on 2 cores):

    .venv/bin/python benchmarks/decode.py

Never part of the test run.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import pathlib
import platform
import statistics
import string
import time

import jax
import numpy as np

from crnn_jax import cli, decode

BEAM_SIZE = 10
SHAPES = {"crnn": (256, 31, 63), "speech": (32, 400, 32)}
ALPHABETS = {
    63: string.digits + string.ascii_letters,  # 62 characters, ids 1..62
    32: string.ascii_lowercase + "'-.,?",  # 31 characters; no space (a word break for pyctcdecode)
}


def load_reference():
  """The NumPy reference search, from the test file (one implementation, not two)."""
  path = pathlib.Path(__file__).resolve().parents[1] / "tests" / "test_decode.py"
  spec = importlib.util.spec_from_file_location("_decode_reference", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.reference_prefix_beam_search


def make_inputs(kind: str, shape: tuple[int, int, int], seed: int):
  """Logits `(B, T, K)` float32, paddings `(B, T)` and lengths `(B,)`."""
  batch, frames, classes = shape
  rng = np.random.default_rng(seed)
  if frames > 100:  # speech: utterances of different lengths in one padded batch
    lengths = rng.integers(frames // 2, frames + 1, size=batch)
  else:  # CRNN: every image is resized to the same width
    lengths = np.full(batch, frames)
  paddings = (np.arange(frames)[None, :] >= lengths[:, None]).astype(np.float32)
  noise = rng.normal(size=(batch, frames, classes))
  if kind == "random":
    return noise.astype(np.float32), paddings, lengths
  # Real-looking: per example, labels separated by blank runs, each held 1-3 frames.
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
  return logits.astype(np.float32), paddings, lengths


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


def jax_runner(logits, paddings, alphabet):
  """A function that decodes the whole batch (jitted, warm) up to top-1 strings."""
  logits, paddings = jax.device_put((logits, paddings))

  def run():
    result = decode.prefix_beam_search(logits, paddings, beam_size=BEAM_SIZE)
    tokens, lengths = jax.device_get((result.tokens[:, 0], result.lengths[:, 0]))
    return decode.to_strings(tokens, lengths, alphabet)

  run()  # compile
  return run


def time_jax(run, repeats):
  """Median (wall, CPU) seconds of `repeats` runs, and the top-1 strings."""
  clocks = []
  for _ in range(repeats):
    with Clock() as clock:
      texts = run()
    clocks.append(clock)
  return (
      statistics.median(c.wall for c in clocks),
      statistics.median(c.cpu for c in clocks),
  ), texts


def time_pyctcdecode(decoder, log_probs, lengths, count, **kwargs):
  texts = []
  with Clock() as clock:
    for b in range(count):
      text = decoder.decode(log_probs[b, : lengths[b]], beam_width=BEAM_SIZE, **kwargs)
      texts.append(text)
  return (clock.wall, clock.cpu), texts


def interleaved(run_jax, batch, decoder, log_probs, lengths, count, rounds, repeats):
  """crnn_jax and pyctcdecode in alternating rounds (the machine's speed drifts).

  Returns the median (wall, CPU) sequences/s of each, the median of the per-round
  ratios, and the top-1 strings of both.
  """
  ours, theirs, ratios = [], [], []
  for r in range(rounds):
    sides = ["jax", "pyctcdecode"] if r % 2 == 0 else ["pyctcdecode", "jax"]
    for side in sides:
      if side == "jax":
        seconds, jax_texts = time_jax(run_jax, repeats)
        ours.append((batch / seconds[0], batch / seconds[1]))
      else:
        seconds, pyctc_texts = time_pyctcdecode(decoder, log_probs, lengths, count)
        theirs.append((count / seconds[0], count / seconds[1]))
    ratios.append((ours[-1][0] / theirs[-1][0], ours[-1][1] / theirs[-1][1]))

  def median(pairs):
    return tuple(statistics.median(p[i] for p in pairs) for i in range(2))

  return median(ours), median(theirs), median(ratios), jax_texts, pyctc_texts


def time_reference(reference, log_probs, paddings, alphabet, count):
  texts = []
  with Clock() as clock:
    for b in range(count):
      best, _ = reference(log_probs[b].astype(np.float64), paddings[b], beam_size=BEAM_SIZE)
      labels = best[0][0] if best else ()
      texts.append("".join(alphabet[i - 1] for i in labels))
  return (clock.wall, clock.cpu), texts


def main(argv=None):
  parser = cli.parser(__doc__, __file__)
  parser.add_argument(
      "--repeats",
      type=int,
      default=3,
      help="timed JAX runs of the batch per round (their median counts)",
  )
  parser.add_argument(
      "--rounds", type=int, default=5, help="alternating crnn_jax / pyctcdecode rounds per case"
  )
  parser.add_argument(
      "--host-examples",
      type=int,
      default=64,
      help="examples per case for pyctcdecode and the reference, which are slow (0: all)",
  )
  args = parser.parse_args(argv)

  try:
    from pyctcdecode import build_ctcdecoder
    from importlib.metadata import version

    logging.getLogger("pyctcdecode").setLevel(logging.ERROR)
    pyctc_name = f"pyctcdecode {version('pyctcdecode')}"
  except ImportError:
    build_ctcdecoder, pyctc_name = None, None
    print(
        "pyctcdecode is not installed (pip install pyctcdecode); comparing with the "
        "NumPy reference only."
    )
  reference = load_reference()

  print(
      f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs, "
      f"{platform.processor() or platform.machine()}; load average at start "
      f"{os.getloadavg()[0]:.1f} (other processes share the CPU)"
  )
  print(
      f"beam {BEAM_SIZE}, no LM; crnn_jax: the whole batch, jitted and warm; pyctcdecode "
      f"and the reference: the first {args.host_examples or 'all'} examples of the same "
      f"batch, one by one. crnn_jax and pyctcdecode alternate over {args.rounds} rounds "
      f"(crnn_jax: median of {args.repeats} runs per round); figures are medians over "
      f"the rounds, ratios the median of the per-round ratios. The reference runs once."
  )
  header = (
      f"{'input':<13}{'B x T x K':<12}{'decoder':<23}{'seq/s':>9}{'(CPU)':>9}"
      f"{'vs pyctcdecode':>16}{'(CPU)':>8}{'vs ref':>9}{'(CPU)':>8}"
      f"   top-1 same as crnn_jax"
  )
  print(header)
  print("-" * len(header))
  summary = {}
  for shape_name, shape in SHAPES.items():
    batch, frames, classes = shape
    alphabet = ALPHABETS[classes]
    decoder = build_ctcdecoder([""] + list(alphabet)) if build_ctcdecoder else None
    for seed, kind in enumerate(["random", "real-looking"]):
      logits, paddings, lengths = make_inputs(kind, shape, seed)
      log_probs = log_softmax(logits)
      count = min(batch, args.host_examples or batch)

      # rates[decoder] = (sequences per wall second, per CPU second)
      run_jax = jax_runner(logits, paddings, alphabet)
      rates, vs_pyctc = {}, None
      if decoder is not None:
        rates["crnn_jax"], rates["pyctcdecode"], vs_pyctc, ours, pyctc_texts = interleaved(
            run_jax, batch, decoder, log_probs, lengths, count, args.rounds, args.repeats
        )
      else:
        seconds, ours = time_jax(run_jax, args.repeats * args.rounds)
        rates["crnn_jax"] = (batch / seconds[0], batch / seconds[1])
      seconds, ref_texts = time_reference(reference, log_probs, paddings, alphabet, count)
      rates["reference"] = (count / seconds[0], count / seconds[1])
      agree = {"reference": sum(a == b for a, b in zip(ours, ref_texts))}
      notes = {"reference": f"{agree['reference']}/{count}"}
      if decoder is not None:
        summary[f"{kind} {shape_name}"] = vs_pyctc[0]
        differ = [b for b in range(count) if pyctc_texts[b] != ours[b]]
        # For each difference: does pyctcdecode agree once it stops pruning, and
        # which of the two answers is really more probable?
        explained = ours_better = 0
        for b in differ:
          _, (unpruned,) = time_pyctcdecode(
              decoder,
              log_probs[b : b + 1],
              lengths[b : b + 1],
              1,
              token_min_logp=-math.inf,
              beam_prune_logp=-math.inf,
          )
          explained += unpruned == ours[b]
          ours_p, theirs_p = exact_log_probs(
              logits[b], paddings[b], [ours[b], pyctc_texts[b]], alphabet
          )
          ours_better += ours_p > theirs_p
        notes["pyctcdecode"] = f"{count - len(differ)}/{count}"
        if differ:
          notes["pyctcdecode"] += (
              f"; of the {len(differ)} others, {explained} agree once pyctcdecode "
              f"stops pruning, and in {ours_better} ours has the higher exact "
              f"CTC probability"
          )

      names = {
          "crnn_jax": "crnn_jax.decode (jit)",
          "pyctcdecode": pyctc_name,
          "reference": "NumPy reference",
      }
      for key in ["crnn_jax", "pyctcdecode", "reference"]:
        if key not in rates:
          continue
        wall, cpu = rates[key]

        def ratio(other, i):
          if other not in rates:
            return "-"
          if other == "pyctcdecode" and key == "crnn_jax":
            return f"{vs_pyctc[i]:.1f}x"  # median of the per-round ratios
          return f"{rates[key][i] / rates[other][i]:.1f}x"

        print(
            f"{kind:<13}{'x'.join(map(str, shape)):<12}{names[key]:<23}"
            f"{wall:>9.1f}{cpu:>9.1f}{ratio('pyctcdecode', 0):>16}"
            f"{ratio('pyctcdecode', 1):>8}{ratio('reference', 0):>9}"
            f"{ratio('reference', 1):>8}   {notes.get(key, '-')}"
        )
    print()
  if summary:
    print(
        "ratio vs pyctcdecode (wall): "
        + "  ".join(f"{name.replace(' ', ':')}={value:.1f}x" for name, value in summary.items())
    )


if __name__ == "__main__":
  main()

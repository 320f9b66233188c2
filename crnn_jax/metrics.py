"""Recognition metrics, host side, accumulated as sums so they reduce across processes.

- word accuracy: exact, case-sensitive match;
- case-insensitive word accuracy (``word_acc_ci``): the scene-text benchmark
  protocol of deep-text-recognition-benchmark: lower-case both strings and keep
  only a-z and 0-9 before comparing;
- character error rate: total edit distance / total reference length;
- ``ned``: mean of 1 - edit distance / max(len(truth), len(prediction)).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from rapidfuzz.distance import Levenshtein

_NOT_ALNUM = re.compile(r"[^a-z0-9]")

# The order of the sums in a metrics vector (so they can be all-reduced as one array).
FIELDS = ("n", "correct", "correct_ci", "edits", "ref_chars", "ned_sum", "confidence_sum", "empty")


def edit_distance(a: Sequence, b: Sequence) -> int:
  """Levenshtein distance (insertions, deletions, substitutions each cost 1).

  Strings or sequences of hashable items; rapidfuzz's C++ implementation, which evaluation
  calls once per example.
  """
  return Levenshtein.distance(a, b)


def benchmark_normalize(text: str) -> str:
  """Lower case, a-z and 0-9 only: how scene-text benchmarks compare words."""
  return _NOT_ALNUM.sub("", text.lower())


def sums(
    truths: Sequence[str], preds: Sequence[str], confidences: Sequence[float] | None = None
) -> np.ndarray:
  """Metric sums over a set of (truth, prediction) pairs, in ``FIELDS`` order."""
  if len(truths) != len(preds):
    raise ValueError(f"truths ({len(truths)}) and preds ({len(preds)}) differ in length.")
  total = dict.fromkeys(FIELDS, 0.0)
  for t, p in zip(truths, preds):
    d = edit_distance(t, p)
    total["correct"] += t == p
    total["correct_ci"] += benchmark_normalize(t) == benchmark_normalize(p)
    total["edits"] += d
    total["ref_chars"] += len(t)
    total["ned_sum"] += 1.0 - d / max(len(t), len(p), 1)
    total["empty"] += not p
  total["n"] = len(truths)
  if confidences is not None:
    total["confidence_sum"] = float(np.sum(confidences))
  return np.array([total[name] for name in FIELDS], np.float64)


def summarize(total: np.ndarray) -> dict:
  """Rates from (possibly all-reduced) sums in ``FIELDS`` order."""
  s = dict(zip(FIELDS, total))
  n = max(s["n"], 1)
  return {
      "n": int(s["n"]),
      "word_acc": s["correct"] / n,
      "word_acc_ci": s["correct_ci"] / n,
      "cer": s["edits"] / max(s["ref_chars"], 1),
      "ned": s["ned_sum"] / n,
      "confidence": s["confidence_sum"] / n,
      "empty_frac": s["empty"] / n,
  }


def empty_hint(result: dict) -> str | None:
  """Why most predictions may be empty, when they are; else None."""
  if result.get("empty_frac", 0.0) < 0.5:
    return None
  return (
      f"{result['empty_frac']:.0%} of predictions are empty: the model still emits only "
      f"the CTC blank. Early in training this is normal (CTC learns blanks first; text "
      f"appears after a few hundred steps). If it persists, check that the labels match "
      f"the images, that the learning rate is not too high (loss stuck or NaN), and that "
      f"evaluation uses the charset the model was trained with."
  )

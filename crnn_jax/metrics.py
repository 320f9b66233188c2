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

_NOT_ALNUM = re.compile(r"[^a-z0-9]")

# The order of the sums in a metrics vector (so they can be all-reduced as one array).
FIELDS = ("n", "correct", "correct_ci", "edits", "ref_chars", "ned_sum", "confidence_sum",
          "empty")


def edit_distance(a: Sequence, b: Sequence) -> int:
  """Levenshtein distance (insertions, deletions, substitutions each cost 1)."""
  if len(a) < len(b):
    a, b = b, a
  prev = list(range(len(b) + 1))
  for i, ca in enumerate(a, 1):
    cur = [i]
    for j, cb in enumerate(b, 1):
      cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
    prev = cur
  return prev[-1]


def benchmark_normalize(text: str) -> str:
  """Lower case, a-z and 0-9 only: how scene-text benchmarks compare words."""
  return _NOT_ALNUM.sub("", text.lower())


def sums(truths: Sequence[str], preds: Sequence[str],
         confidences: Sequence[float] | None = None) -> np.ndarray:
  """Metric sums over a set of (truth, prediction) pairs, in ``FIELDS`` order."""
  if len(truths) != len(preds):
    raise ValueError(f"truths ({len(truths)}) and preds ({len(preds)}) differ in length.")
  out = np.zeros(len(FIELDS), np.float64)
  for t, p in zip(truths, preds):
    d = edit_distance(t, p)
    out[1] += t == p
    out[2] += benchmark_normalize(t) == benchmark_normalize(p)
    out[3] += d
    out[4] += len(t)
    out[5] += 1.0 - d / max(len(t), len(p), 1)
    out[7] += not p
  out[0] = len(truths)
  if confidences is not None:
    out[6] = float(np.sum(confidences))
  return out


def summarize(total: np.ndarray) -> dict:
  """Rates from (possibly all-reduced) sums."""
  n = max(total[0], 1)
  return {
      "n": int(total[0]),
      "word_acc": total[1] / n,
      "word_acc_ci": total[2] / n,
      "cer": total[3] / max(total[4], 1),
      "ned": total[5] / n,
      "confidence": total[6] / n,
      "empty_frac": total[7] / n,
  }


def empty_hint(result: dict) -> str | None:
  """Why most predictions may be empty, when they are; else None."""
  if result.get("empty_frac", 0.0) < 0.5:
    return None
  return (f"{result['empty_frac']:.0%} of predictions are empty: the model still emits only "
          f"the CTC blank. Early in training this is normal (CTC learns blanks first; text "
          f"appears after a few hundred steps). If it persists, check that the labels match "
          f"the images, that the learning rate is not too high (loss stuck or NaN), and that "
          f"evaluation uses the charset the model was trained with.")

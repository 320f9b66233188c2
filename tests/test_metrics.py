import random

import numpy as np
import pytest

from crnn_jax import metrics


def test_empty_predictions_get_a_hint_and_others_do_not():
  mostly_empty = metrics.summarize(metrics.sums(["cat", "dog", "owl"], ["", "", "owl"]))
  assert abs(mostly_empty["empty_frac"] - 2 / 3) < 1e-9
  assert "only the CTC blank" in metrics.empty_hint(mostly_empty)
  fine = metrics.summarize(metrics.sums(["cat", "dog"], ["cot", ""]))
  assert fine["empty_frac"] == 0.5 and metrics.empty_hint(fine) is not None
  fine = metrics.summarize(metrics.sums(["cat", "dog", "x"], ["cot", "", "x"]))
  assert metrics.empty_hint(fine) is None


def test_edit_distance_small_cases():
  assert metrics.edit_distance("kitten", "sitting") == 3
  assert metrics.edit_distance("", "abc") == 3
  assert metrics.edit_distance("same", "same") == 0


def _levenshtein(a, b) -> int:
  """The textbook dynamic programme, one row at a time: the reference."""
  prev = list(range(len(b) + 1))
  for i, ca in enumerate(a, 1):
    cur = [i]
    for j, cb in enumerate(b, 1):
      cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
    prev = cur
  return prev[-1]


def test_edit_distance_equals_the_dynamic_programme_on_random_strings():
  """Strings and lists of token ids, empty ones included, over small alphabets so that
  matches and substitutions both occur."""
  rng = random.Random(0)
  for _ in range(500):
    a = "".join(rng.choices("abc", k=rng.randint(0, 9)))
    b = "".join(rng.choices("abc", k=rng.randint(0, 9)))
    assert metrics.edit_distance(a, b) == _levenshtein(a, b), (a, b)
    ids_a, ids_b = [ord(c) for c in a], [ord(c) for c in b]
    assert metrics.edit_distance(ids_a, ids_b) == _levenshtein(a, b), (a, b)


def test_ned_divides_by_the_longer_string_and_an_empty_set_gives_zeros():
  """Breaks if NED divides by the truth's length only (a prediction longer than the truth
  would score 0 instead of 1/2), if an empty set gives NaN rates, or if truths and
  predictions of different lengths are silently truncated by zip."""
  result = metrics.summarize(metrics.sums(["ab"], ["abcd"]))
  assert result["ned"] == 0.5 and result["cer"] == 1.0
  empty = metrics.summarize(metrics.sums([], [], []))
  assert empty["n"] == 0
  assert all(empty[k] == 0.0 for k in ("word_acc", "word_acc_ci", "cer", "ned", "confidence"))
  with pytest.raises(ValueError, match="differ in length"):
    metrics.sums(["a", "b"], ["a"])


def test_single_character_and_empty_pairs():
  """The edge cases a mutation tester (mutmut) found unpinned: CER over a one-character
  truth (a floor of 2 in the denominator would halve it), NED of an empty truth and an
  empty prediction (1: they are equal; no division by zero), and a result without an
  ``empty_frac`` (no hint)."""
  result = metrics.summarize(metrics.sums(["a", ""], ["", ""]))
  assert result["cer"] == 1.0 and result["ned"] == 0.5 and result["word_acc"] == 0.5
  assert metrics.sums([""], [""]).dtype == np.float64
  assert metrics.empty_hint({}) is None and metrics.empty_hint({"empty_frac": 0.2}) is None
  assert "60% of predictions are empty" in metrics.empty_hint({"empty_frac": 0.6})

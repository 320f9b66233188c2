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

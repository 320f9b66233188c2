"""Tests for crnn_jax.metrics and crnn_jax.evaluation, and scripts/evaluate.py: each metric
against hand-computed values, every example evaluated whatever the batch size, bad files
reported, the JSON and the mistakes grid."""

import json
import os
import sys

import numpy as np
import pytest
import tiny_model
from PIL import Image

from crnn_jax import charset as charset_lib
from crnn_jax import evaluation, metrics
from crnn_jax.data import readers
from crnn_jax.recognizer import read_image

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")
)
import evaluate as evaluate_script  # noqa: E402  scripts/evaluate.py

# Five (truth, prediction, confidence) triples, worked out by hand below.
TRUTHS = ["Hello", "WORLD", "it's", "abc", "x"]
PREDS = ["Hello", "world", "its", "abd", ""]
CONFS = [0.9, 0.8, 0.5, 0.4, 0.1]


def test_edit_distance_by_hand():
  assert metrics.edit_distance("kitten", "sitting") == 3  # k->s, e->i, +g
  assert metrics.edit_distance("", "abc") == 3
  assert metrics.edit_distance("abc", "") == 3
  assert metrics.edit_distance("flaw", "lawn") == 2  # -f, +n
  assert metrics.edit_distance("same", "same") == 0


def test_benchmark_protocol_by_hand():
  # deep-text-recognition-benchmark: lower case, then keep only a-z and 0-9.
  assert metrics.benchmark_normalize("Hello, World-2!") == "helloworld2"
  assert metrics.benchmark_normalize("it's") == "its"
  assert metrics.benchmark_normalize("Caf\u00e9 #1") == "caf1"  # accented letters dropped too
  assert metrics.benchmark_normalize("...") == ""


def test_metrics_by_hand():
  result = metrics.summarize(metrics.sums(TRUTHS, PREDS, CONFS))
  assert result["n"] == 5
  # Exact: only "Hello".
  assert result["word_acc"] == pytest.approx(1 / 5)
  # Benchmark protocol: Hello, WORLD~world and it's~its match; abc/abd and x/"" do not.
  assert result["word_acc_ci"] == pytest.approx(3 / 5)
  # Edits 0 + 5 (case counts) + 1 + 1 + 1 = 8 over 5 + 5 + 4 + 3 + 1 = 18 truth characters.
  assert result["cer"] == pytest.approx(8 / 18)
  # 1 - d / max(len): 1, 0, 3/4, 2/3, 0.
  assert result["ned"] == pytest.approx((1 + 0 + 0.75 + 2 / 3 + 0) / 5)
  assert result["confidence"] == pytest.approx(np.mean(CONFS))
  # Sums add up over chunks, as evaluation accumulates them.
  split = metrics.sums(TRUTHS[:2], PREDS[:2], CONFS[:2]) + metrics.sums(
      TRUTHS[2:], PREDS[2:], CONFS[2:]
  )
  assert metrics.summarize(split) == result


class FakeSource(readers.Source):
  """Images whose first pixel is their index; some examples are broken."""

  spec = "fake:"

  def __init__(self, labels):
    self.labels = labels

  def __len__(self):
    return len(self.labels)

  def read(self, index):
    label = self.labels[index]
    if label is None:
      raise readers.BadExample("corrupt_image", f"img{index}.png", "unreadable image (test)")
    image = np.full((32, 40), index, np.uint8)
    return image, label, f"img{index}.png"


class FakeRecognizer:
  """Answers a fixed prediction per example index (read from the image's pixels)."""

  height = 32

  def __init__(self, answers, charset):
    self.answers = answers
    self.charset = charset

  def warmup(self):
    pass

  def preprocess(self, image):
    return np.asarray(image)

  def recognize_preprocessed(self, arrays):
    return [[self.answers[int(a[0, 0])]] for a in arrays]


def test_evaluate_source_by_hand():
  """Hand-computed metrics end to end; bad and empty examples reported, not counted."""
  labels = ["Hello", None, "WORLD", "it's", "", "abc", "x"]
  answers = {0: ("Hello", 0.9), 2: ("world", 0.8), 3: ("its", 0.5), 5: ("abd", 0.4), 6: ("", 0.1)}
  rec = FakeRecognizer(answers, charset_lib.Charset())
  result = evaluation.evaluate_source(rec, FakeSource(labels), chunk=3, num_mistakes=2)
  expected = metrics.summarize(metrics.sums(TRUTHS, PREDS, CONFS))
  for key in ("n", "word_acc", "word_acc_ci", "cer", "ned", "confidence"):
    assert result.metrics[key] == pytest.approx(expected[key]), key
  assert result.report.total == 7 and result.report.usable == 5
  assert dict(result.report.skipped) == {"corrupt_image": 1, "empty_label": 1}
  assert "img1.png" in result.report.describe()
  assert result.unknown_labels == 1  # "it's": the default charset has no apostrophe
  # Worst first: "x" -> "" and "WORLD" -> "world" are both wholly wrong (NED 1); the
  # more confident one ranks first.
  assert [(m.truth, m.prediction) for m in result.mistakes] == [("WORLD", "world"), ("x", "")]


def test_case_folded_model_is_compared_on_folded_truths():
  rec = FakeRecognizer(
      {0: ("hello", 1.0)}, charset_lib.Charset("abcdefghijklmnopqrstuvwxyz", case_fold=True)
  )
  result = evaluation.evaluate_source(rec, FakeSource(["HeLLo"]))
  assert result.metrics["word_acc"] == 1.0 and result.unknown_labels == 0


@pytest.mark.real_data
def test_evaluate_script_every_example_json_errors(
    reading_weights, reading_model, tmp_path, capsys
):
  """37 usable examples in batches of 16 (not a multiple), a corrupt file, a bad line, with
  a model that reads about 60% of them: the JSON numbers equal those computed from the
  Recognizer's own answers (in batches of 8), and each mistakes grid has one row per
  mistake up to --num-errors.

  Breaks if the script drops, repeats or reorders examples (other accuracy, CER or mean
  confidence than the Recognizer's answers give), pads a partial batch into the
  metrics, counts a bad file or line as an example, or draws other rows than the
  mistakes.
  """
  lines = tiny_model.read_labels("svt_train")[:37]
  spec = tiny_model.write_tsv(str(tmp_path / "data"), "svt_train", lines)
  (tmp_path / "data" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
  with open(tmp_path / "data" / "labels.tsv", "a", encoding="utf-8") as f:
    f.write("broken.png\tBROKEN\nno tab on this line\n")
  spec2 = tiny_model.write_tsv(str(tmp_path / "few"), "svt_train", lines[:5])
  code = evaluate_script.main(
      [
          "--weights",
          reading_weights,
          "--data",
          spec,
          "--data",
          spec2,
          "--batch-size",
          "16",
          "--json",
          str(tmp_path / "out.json"),
          "--errors",
          str(tmp_path / "errors.png"),
          "--num-errors",
          "4",
      ]
  )
  out, err = capsys.readouterr()
  assert code == 0
  assert "broken.png" in err and "labels.tsv:39" in err  # reported with where they are
  table = out.strip().splitlines()[-3:]
  assert table[0].split()[:4] == ["dataset", "N", "word_acc", "word_acc_ci"]
  assert table[1].split()[:2] == [spec, "37"] and table[2].split()[:2] == [spec2, "5"]

  numbers = json.loads((tmp_path / "out.json").read_text())
  assert list(numbers) == [spec, spec2]
  got = numbers[spec]
  assert got["n"] == 37 and got["skipped"] == 2
  assert set(got) >= {"n", "word_acc", "word_acc_ci", "cer", "ned", "confidence", "images_per_s"}

  # The same numbers from the Recognizer's answers for the 37 images.
  root = os.path.join(tiny_model.REAL, "svt_train")
  hyps = reading_model([read_image(os.path.join(root, rel)) for rel, _ in lines])
  truths = [t for _, t in lines]
  expected = metrics.summarize(metrics.sums(truths, [h[0] for h in hyps], [h[1] for h in hyps]))
  assert 0.2 < expected["word_acc"] < 1.0 and 0.1 < expected["confidence"] < 0.95  # it reads
  for key in ("word_acc", "word_acc_ci", "cer", "ned"):
    assert got[key] == pytest.approx(expected[key], abs=1e-9), key
  assert got["confidence"] == pytest.approx(expected["confidence"], rel=1e-5)

  # One mistakes grid per dataset: a row (a 2x-scaled 32-pixel image and a 4-pixel gap)
  # per mistake, at most 4; a set read without a mistake gets the 16x16 blank tile.
  for name, n in (("data", 37), ("few", 5)):
    wrong = sum(t != h[0] for t, h in zip(truths[:n], hyps[:n]))
    grid = Image.open(tmp_path / f"errors_{name}.png")
    height = min(wrong, 4) * (2 * 32 + 4) if wrong else 16
    assert grid.mode == "RGB" and grid.height == height, (name, wrong)
    if name == "data":
      assert wrong > 4, wrong  # the 37 crops hold more mistakes than the grid keeps

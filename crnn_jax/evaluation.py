"""Measuring a trained model on labelled data: the library side of ``scripts/evaluate.py``.

``evaluate_source`` runs a ``Recognizer`` over every example of a dataset, exactly as
``predict`` would see the images (no label-dependent widening), and accumulates the
metrics of ``crnn_jax.metrics``: word accuracy (exact), the scene-text benchmark's
case-insensitive alphanumeric word accuracy, character error rate, 1 - normalised edit
distance and mean confidence. Batches are padded, never dropped, so N is the number
of usable examples. An example is unusable only when its image cannot be read or its
label line is malformed or empty; those are counted and reported with their paths. A
label holding characters the model cannot output is kept (it counts as a mistake under
exact matching) and counted separately.

Truths are compared as the model was trained to produce them: for a ``case_fold``
charset they are lower-cased first, as the training loop's evaluation does.
"""

from __future__ import annotations

import dataclasses
import heapq
import time
from collections.abc import Sequence

import numpy as np

from crnn_jax import metrics
from crnn_jax.data import labels as labels_lib
from crnn_jax.data import readers, specs
from crnn_jax.recognizer import Recognizer

# The numbers of one dataset, in the order they are printed.
COLUMNS = (
    ("n", "N", "{:d}"),
    ("word_acc", "word_acc", "{:.4f}"),
    ("word_acc_ci", "word_acc_ci", "{:.4f}"),
    ("cer", "CER", "{:.4f}"),
    ("ned", "1-NED", "{:.4f}"),
    ("confidence", "conf", "{:.4f}"),
    ("images_per_s", "images/s", "{:.1f}"),
)


@dataclasses.dataclass
class Mistake:
  """One wrong prediction: the preprocessed image, what it says, what was read."""

  image: np.ndarray  # (H, w) uint8
  truth: str
  prediction: str
  confidence: float
  key: str

  @property
  def badness(self) -> tuple[float, float]:
    """Sort key, worst last: normalised edit distance, then confidence."""
    d = metrics.edit_distance(self.truth, self.prediction)
    return d / max(len(self.truth), len(self.prediction), 1), self.confidence


@dataclasses.dataclass
class DatasetResult:
  """The evaluation of one dataset.

  Attributes:
    spec: the dataset spec.
    metrics: ``n``, ``word_acc``, ``word_acc_ci``, ``cer``, ``ned``,
      ``confidence`` (see ``crnn_jax.metrics``) and ``images_per_s``.
    report: what was read and skipped (unreadable files with their paths).
    unknown_labels: usable examples whose label has characters outside the charset.
    mistakes: the worst mistakes, worst first.
  """

  spec: str
  metrics: dict
  report: labels_lib.DataReport
  unknown_labels: int = 0
  mistakes: list = dataclasses.field(default_factory=list)


def evaluate_source(
    recognizer: Recognizer, source: readers.Source, *, num_mistakes: int = 32, chunk: int = 512
) -> DatasetResult:
  """Evaluates ``recognizer`` on every usable example of ``source``.

  Args:
    recognizer: the model, with the decoding to evaluate.
    source: from ``specs.open_source``.
    num_mistakes: how many of the worst mistakes to keep (for ``errors_image``).
    chunk: examples read and recognised at a time.

  Returns:
    a ``DatasetResult``. ``images_per_s`` counts preprocessing, the model and
    decoding, not reading files nor compilation (``warmup`` runs first).
  """
  report = labels_lib.DataReport(source.spec, total=len(source))
  charset = recognizer.charset
  total = np.zeros(len(metrics.FIELDS))
  unknown, seconds, worst, counter = 0, 0.0, [], 0
  recognizer.warmup()
  for start in range(0, len(source), chunk):
    images, truths, keys = [], [], []
    for item in source.read_many(range(start, min(start + chunk, len(source)))):
      if isinstance(item, readers.BadExample):
        report.skip(item.reason, f"{item.key} ({item.message})")
        continue
      image, text, key = item
      if not text:
        report.skip("empty_label", str(key))
        continue
      images.append(image)
      truths.append(charset.normalize(text))
      keys.append(key)
    t0 = time.perf_counter()
    arrays, kept = [], []
    for i, image in enumerate(images):
      try:
        arrays.append(recognizer.preprocess(image))
        kept.append(i)
      except ValueError as e:
        report.skip("empty_image", f"{keys[i]} ({e})")
    hyps = recognizer.recognize_preprocessed(arrays)
    seconds += time.perf_counter() - t0
    truths = [truths[i] for i in kept]
    keys = [keys[i] for i in kept]
    preds = [h[0][0] for h in hyps]
    confs = [h[0][1] for h in hyps]
    total += metrics.sums(truths, preds, confs)
    report.usable += len(truths)
    unknown += sum(1 for t in truths if charset.unknown_chars(t))
    for array, truth, pred, conf, key in zip(arrays, truths, preds, confs, keys):
      if truth != pred and num_mistakes > 0:
        m = Mistake(array, truth, pred, conf, str(key))
        counter += 1  # ties keep the earlier example
        item = (m.badness, -counter, m)
        if len(worst) < num_mistakes:
          heapq.heappush(worst, item)
        else:
          heapq.heappushpop(worst, item)
  result = metrics.summarize(total)
  result["images_per_s"] = result["n"] / seconds if seconds > 0 else 0.0
  mistakes = [m for _, _, m in sorted(worst, key=lambda x: x[:2], reverse=True)]
  return DatasetResult(source.spec, result, report, unknown, mistakes)


def evaluate(recognizer: Recognizer, spec: str, **kwargs) -> DatasetResult:
  """``evaluate_source`` on the dataset named by ``spec`` (see ``specs.open_source``)."""
  source = specs.open_source(
      spec,
      height=recognizer.height,
      charset=recognizer.charset.chars if spec.startswith("synth:") else None,
  )
  result = evaluate_source(recognizer, source, **kwargs)
  result.spec = spec  # as the caller wrote it (the source may spell it out)
  return result


def format_table(results: Sequence[DatasetResult]) -> str:
  """One row per dataset with every number of ``COLUMNS``."""
  name_width = max([len("dataset")] + [len(r.spec) for r in results])
  header = f"{'dataset':<{name_width}}" + "".join(f"  {title:>11}" for _, title, _ in COLUMNS)
  lines = [header]
  for r in results:
    cells = "".join(f"  {fmt.format(r.metrics[key]):>11}" for key, _, fmt in COLUMNS)
    lines.append(f"{r.spec:<{name_width}}{cells}")
  return "\n".join(lines)


def to_json(results: Sequence[DatasetResult]) -> dict:
  """``{spec: {n, word_acc, word_acc_ci, cer, ned, confidence, images_per_s, skipped,
  unknown_labels}}`` with plain Python numbers."""
  out = {}
  for r in results:
    entry = {
        key: (int(r.metrics[key]) if key == "n" else float(r.metrics[key])) for key, _, _ in COLUMNS
    }
    entry["skipped"] = int(sum(r.report.skipped.values()))
    entry["unknown_labels"] = int(r.unknown_labels)
    out[r.spec] = entry
  return out


def errors_image(mistakes: Sequence[Mistake]) -> np.ndarray:
  """A grid of mistakes (image, truth, prediction with its confidence) as an RGB array."""
  from crnn_jax import report

  return report.predictions_image(
      [(m.image, m.truth, f"{m.prediction}  ({m.confidence:.2f})") for m in mistakes]
  )

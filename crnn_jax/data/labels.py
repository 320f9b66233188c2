"""The one label check of the data path, and the report of what was skipped and why.

Every example, whichever source it comes from and whether it is indexed at start-up or
read during training, passes ``check_label``: a label is usable when it is not empty,
every character is in the charset (or, with ``unknown_chars='drop'``, something is left
once the others are removed), and the model has enough frames to emit it.
Unusable examples are counted by reason in a ``DataReport``, with a few example keys
per reason, and printed at start-up; they are never fatal on their own.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence

from crnn_jax import charset as charset_lib

# Human-readable text of each skip reason, used in reports and errors.
REASONS = {
    "missing_file": "image files missing",
    "corrupt_image": "images unreadable or truncated",
    "empty_image": "zero-size images",
    "malformed_line": "label lines without a TAB",
    "empty_label": "empty labels",
    "unknown_chars": "labels with characters outside the charset",
    "label_too_long": "labels too long for the widest bucket",
    "malformed_name": "file names without a word (INDEX_WORD_LEXICON.jpg)",
    "bad_label": "labels that are not UTF-8 text",
}

UNKNOWN_CHARS_MODES = ("skip", "drop", "error")


def required_frames(ids: Sequence[int]) -> int:
  """Fewest CTC frames that can emit ``ids``: one per label, plus a blank between repeats.

  The host-side twin of ``losses.required_frames``, which does the same on padded
  device arrays inside the jitted step.
  """
  return len(ids) + sum(1 for a, b in zip(ids, ids[1:]) if a == b)


def check_label(
    text: str, charset: charset_lib.Charset, max_frames: int, unknown_chars: str = "skip"
) -> list[int] | tuple[str, str]:
  """The label's ids, or ``(reason, detail)`` when it cannot be trained on.

  Args:
    text: the label as the source gives it.
    charset: maps text to ids; decides which characters are known.
    max_frames: frames of the widest image the example may get.
    unknown_chars: what to do with characters outside the charset: 'skip' returns a
      reason; 'drop' trains on the label without them ("Joe's" -> "Joes", the
      scene-text protocol's reading), and returns a reason only when nothing is left;
      'error' raises.

  Raises:
    ValueError: for unknown characters with ``unknown_chars='error'``, naming them.
  """
  if not text:
    return "empty_label", "empty label"
  missing = charset.unknown_chars(text)
  if missing:
    if unknown_chars == "error":
      charset.encode(text)  # raises, naming the character and the text
    if unknown_chars != "drop":
      return "unknown_chars", f"{text!r} has {missing!r}"
    kept = "".join(c for c in charset.normalize(text) if c not in missing)
    if not kept:
      return "unknown_chars", f"{text!r} has only {missing!r}"
    text = kept
  ids = charset.encode(text)
  need = required_frames(ids)
  if need > max_frames:
    return "label_too_long", f"{len(ids)} chars need {need} frames"
  return ids


@dataclasses.dataclass
class DataReport:
  """What a source held: examples seen, usable, and skipped by reason with examples."""

  spec: str
  total: int = 0
  usable: int = 0
  skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  samples: dict = dataclasses.field(default_factory=dict)  # reason -> [message, ...]
  max_width: int = 0
  max_frames: int = 0

  def skip(self, reason: str, message: str, keep: int = 3):
    self.skipped[reason] += 1
    self.samples.setdefault(reason, [])
    if len(self.samples[reason]) < keep:
      self.samples[reason].append(message)

  def describe(self) -> str:
    """One line per skip reason, with up to three examples each."""
    head = f"{self.spec}: {self.usable} of {self.total} examples usable"
    if not self.skipped:
      return head + "."
    lines = [head + ", skipped:"]
    for reason, n in self.skipped.most_common():
      what = REASONS.get(reason, reason)
      if reason == "label_too_long":
        what = (
            f"labels need more than {self.max_frames} frames (width {self.max_width}); "
            f"add a wider data.width_buckets entry"
        )
      lines.append(f"  {n:>7}  {what}: e.g. " + "; ".join(self.samples.get(reason, [])))
    return "\n".join(lines)


def check_usable(report: DataReport, usable_global: int | None = None):
  """Raises ValueError saying what was found when no example is usable."""
  usable = report.usable if usable_global is None else usable_global
  if usable == 0:
    raise ValueError(
        f"Dataset {report.describe()}\nNothing to train or evaluate on: "
        f"fix the data or the settings named above."
    )

"""Text <-> integer ids for CTC: the alphabet a model predicts over.

Id 0 is the CTC blank; character ``chars[i]`` has id ``i + 1``, so a charset of
``n`` characters needs a model with ``n + 1`` output classes. Host side only
(plain Python), so the data pipeline and the decoders can share it.
"""

from __future__ import annotations

import os
import string
from collections.abc import Iterable, Sequence

BLANK_ID = 0

# The seed model's 62 characters, in the order the seed used: a-z, A-Z, 0-9.
DEFAULT_CHARS = string.ascii_lowercase + string.ascii_uppercase + string.digits


class Charset:
  """An ordered set of characters, with the CTC blank at id 0.

  Args:
    chars: the characters, each once, in id order (``chars[0]`` gets id 1).
    case_fold: lower-case text before encoding, for models trained on a
      lower-case alphabet. Decoding is unaffected.

  Raises:
    ValueError: if ``chars`` is empty or repeats a character.
  """

  def __init__(self, chars: str = DEFAULT_CHARS, *, case_fold: bool = False):
    if not chars:
      raise ValueError("Charset chars is empty: give at least one character.")
    seen = set()
    repeats = sorted({c for c in chars if c in seen or seen.add(c)})
    if repeats:
      raise ValueError(
          f"Charset chars repeats {''.join(repeats)!r}: each character may appear once."
      )
    self.chars = chars
    self.case_fold = case_fold
    self._ids = {c: i + 1 for i, c in enumerate(chars)}

  @classmethod
  def from_spec(cls, spec: str, *, case_fold: bool = False) -> "Charset":
    """A charset from a string of characters or from ``file:PATH``.

    ``'default'`` (or an empty string) is the seed's 62 characters. A file holds
    the characters either on one line or one per line; a final newline is not a
    character. Write a space as a line holding one space.
    """
    if spec in ("", "default"):
      return cls(DEFAULT_CHARS, case_fold=case_fold)
    if spec.startswith("file:"):
      return cls.from_file(spec[len("file:") :], case_fold=case_fold)
    return cls(spec, case_fold=case_fold)

  @classmethod
  def from_file(cls, path: str | os.PathLike, *, case_fold: bool = False) -> "Charset":
    """Reads characters from a UTF-8 file: one line of characters, or one per line."""
    with open(path, encoding="utf-8") as f:
      # One line of characters or one character per line: joining the lines reads both
      # (and splitlines drops "\r" of Windows line ends as well as "\n").
      chars = "".join(f.read().splitlines())
    if not chars:
      raise ValueError(f"Charset file {os.fspath(path)!r} holds no characters.")
    return cls(chars, case_fold=case_fold)

  @property
  def num_classes(self) -> int:
    """Number of model outputs: the characters plus the blank."""
    return len(self.chars) + 1

  def normalize(self, text: str) -> str:
    """The text as it will be encoded (case-folded where the charset folds)."""
    return text.lower() if self.case_fold else text

  def unknown_chars(self, text: str) -> str:
    """The characters of ``text`` (after folding) that this charset lacks, in order."""
    out = []
    for c in self.normalize(text):
      if c not in self._ids and c not in out:
        out.append(c)
    return "".join(out)

  def encode(self, text: str) -> list[int]:
    """Ids of ``text``.

    Raises:
      ValueError: naming the first unknown character and the text.
    """
    text = self.normalize(text)
    try:
      return [self._ids[c] for c in text]
    except KeyError as e:
      raise ValueError(
          f"Character {e.args[0]!r} in text {text!r} is not in the charset "
          f"({len(self.chars)} characters). Add it to the charset, set case_fold "
          f"for a lower-case charset, or let the reader skip such labels."
      ) from None

  def decode(self, ids: Iterable[int]) -> str:
    """Text of ``ids``; the blank and negative padding ids are dropped. No CTC collapse."""
    chars = self.chars
    n = len(chars)
    return "".join(chars[i - 1] for i in map(int, ids) if 0 < i <= n)

  def __len__(self) -> int:
    return len(self.chars)

  def __eq__(self, other) -> bool:
    return (
        isinstance(other, Charset)
        and other.chars == self.chars
        and other.case_fold == self.case_fold
    )

  def __repr__(self) -> str:
    return f"Charset({self.chars!r}, case_fold={self.case_fold})"


def encode_batch(charset: Charset, texts: Sequence[str], max_len: int):
  """Pads encoded texts into ``labels (N, max_len) int32`` and ``label_paddings`` (1.0 = pad).

  Raises:
    ValueError: if a text is longer than ``max_len`` or has unknown characters.
  """
  import numpy as np

  labels = np.zeros((len(texts), max_len), np.int32)
  paddings = np.ones((len(texts), max_len), np.float32)
  for i, text in enumerate(texts):
    ids = charset.encode(text)
    if len(ids) > max_len:
      raise ValueError(f"Text {text!r} has {len(ids)} characters; max_len is {max_len}.")
    labels[i, : len(ids)] = ids
    paddings[i, : len(ids)] = 0.0
  return labels, paddings

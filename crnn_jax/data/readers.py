"""The project's own sources: folders of images with a ``labels.tsv``, and rendered words.

Spec strings (``specs.open_source`` parses them):

- ``synth:N[,seed=S][,difficulty=D]``: N words rendered by ``crnn_jax.data.render``;
  ``synth:inf[,...]`` an endless stream of them (for pretraining: no word image repeats).
- ``tsv:PATH[,include=FILE][,exclude=FILE]``: a folder with ``labels.tsv``
  (``relative/path<TAB>label`` per line); ``include``/``exclude`` name files listing
  relative paths, one per line, to keep or to leave out (validation splits).

``BadExample`` and ``Source`` (``base``) are re-exported here for convenience.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from PIL import Image, UnidentifiedImageError

from crnn_jax import extras
from crnn_jax.data.base import BadExample, Source


class TsvSource(Source):
  """A folder holding ``labels.tsv`` and the images it names (paths relative to the folder).

  Raises:
    ValueError: if the folder or its ``labels.tsv`` does not exist.
  """

  def __init__(
      self,
      folder: str | os.PathLike,
      labels_file: str = "labels.tsv",
      *,
      include: str | None = None,
      exclude: str | None = None,
      spec: str | None = None,
  ):
    self.folder = os.fspath(folder)
    self.spec = spec or f"tsv:{self.folder}"
    path = os.path.join(self.folder, labels_file)
    if not os.path.isdir(self.folder):
      raise ValueError(f"Dataset {self.spec}: folder {self.folder!r} does not exist.")
    if not os.path.isfile(path):
      raise ValueError(
          f"Dataset {self.spec}: no {labels_file} in {self.folder!r}. Expected one line per "
          f"image: relative/path<TAB>label."
      )
    self.entries = []  # (relative path or None, label, line number, raw line)
    with open(path, encoding="utf-8", errors="replace") as f:
      for lineno, line in enumerate(f, 1):
        line = line.rstrip("\r\n")
        if not line.strip():
          continue
        rel, sep, label = line.partition("\t")
        self.entries.append((rel if sep else None, label, lineno, line))
    if include is not None or exclude is not None:
      self._select(include, exclude)

  def _select(self, include: str | None, exclude: str | None):
    """Keeps the entries listed in ``include`` and drops those in ``exclude``."""

    def listed(path: str, option: str) -> set:
      if not os.path.isfile(path):
        raise ValueError(f"Dataset {self.spec}: {option} file {path!r} does not exist.")
      with open(path, encoding="utf-8") as f:
        return {line.strip() for line in f if line.strip() and not line.startswith("#")}

    known = {rel for rel, *_ in self.entries if rel is not None}
    for option, path in (("include", include), ("exclude", exclude)):
      if path is None:
        continue
      names = listed(path, option)
      unknown = sorted(names - known)
      if unknown:
        raise ValueError(
            f"Dataset {self.spec}: {len(unknown)} path(s) of {option} file "
            f"{path!r} are not in labels.tsv, e.g. {unknown[:3]}; the list does "
            f"not belong to this folder."
        )
      keep = (lambda rel: rel in names) if option == "include" else (lambda rel: rel not in names)
      self.entries = [e for e in self.entries if e[0] is not None and keep(e[0])]

  def __len__(self) -> int:
    return len(self.entries)

  def read(self, index: int):
    rel, label, lineno, line = self.entries[index]
    if rel is None:
      raise BadExample(
          "malformed_line",
          f"labels.tsv:{lineno}",
          f"no TAB between path and label in {line[:80]!r}",
      )
    path = os.path.join(self.folder, rel)
    if not os.path.isfile(path):
      raise BadExample("missing_file", path, "file not found")
    try:
      with Image.open(path) as im:
        im.load()
        image = im.copy()
        image.format = im.format
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
      raise BadExample("corrupt_image", path, f"unreadable image ({e})") from None
    if image.width == 0 or image.height == 0:
      raise BadExample("empty_image", path, f"zero-size image {image.width}x{image.height}")
    return image, label, path


# Length of an endless rendered source: far more words than any run reads.
ENDLESS_LENGTH = 2**62


class SynthSource(Source):
  """``n`` words from the project's renderer (``n=None``: endless); deterministic for
  (seed, index).

  Raises:
    crnn_jax.extras.MissingExtraError: without the [synth] extra (fonts, words, photos).
  """

  rendered = True

  def __init__(
      self,
      n: int | None,
      *,
      seed: int = 0,
      height: int = 32,
      difficulty: float | None = None,
      charset: str | None = None,
      num_workers: int | None = None,
      soft: float | None = None,
      extrude: float | None = None,
  ):
    extras.require("synth", "the synth: data spec")
    from crnn_jax.data import render  # Pillow-heavy; only when synthetic data is used.

    self._render = render
    self.n = n
    self.seed = seed
    self.height = height
    self.num_workers = num_workers
    self.kwargs = {}
    if difficulty is not None:
      self.kwargs["difficulty"] = difficulty
    if charset is not None:
      self.kwargs["charset"] = charset
    looks = {"soft": soft, "extrude": extrude}
    self.kwargs.update({k: v for k, v in looks.items() if v is not None})
    self.endless = n is None
    self.spec = (
        f"synth:{'inf' if n is None else n},seed={seed}"
        + (f",difficulty={difficulty}" if difficulty is not None else "")
        + "".join(f",{k}={v}" for k, v in looks.items() if v is not None)
    )

  def __len__(self) -> int:
    return ENDLESS_LENGTH if self.endless else self.n

  def _renderer(self):
    if getattr(self, "_cached_renderer", None) is None:
      self._cached_renderer = self._render.Renderer(
          seed=self.seed, height=self.height, **self.kwargs
      )
    return self._cached_renderer

  def __getstate__(self):
    return dict(self.__dict__, _cached_renderer=None, _render=None)

  def __setstate__(self, state):
    from crnn_jax.data import render

    self.__dict__.update(state, _render=render)

  def read(self, index: int):
    img, text = self._renderer().render(index)
    return img, text, f"synth[{index}]"

  def text(self, index: int) -> str:
    """The word image ``index`` shows, without rendering it (cheap)."""
    return self._renderer().text(index)

  def read_many(self, indices: Sequence[int]) -> list:
    indices = list(indices)
    if indices and indices == list(range(indices[0], indices[0] + len(indices))):
      pairs = self._render.render_range(
          self.seed,
          indices[0],
          indices[0] + len(indices),
          height=self.height,
          num_workers=self.num_workers,
          **self.kwargs,
      )
      return [(img, text, f"synth[{i}]") for i, (img, text) in zip(indices, pairs)]
    return super().read_many(indices)

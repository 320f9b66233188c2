"""Dataset sources named by spec strings, read one example at a time.

A source is random access: ``len(source)`` examples, ``source.read(i)`` returns
``(image, text, key)`` where ``image`` is anything ``preprocess.to_pil_gray``
takes and ``key`` names the example for reports (a path, an index). A problem
with one example raises ``BadExample`` with a reason; the pipeline counts and
reports those and carries on.

Spec strings:

- ``synth:N[,seed=S][,difficulty=D]``: N words rendered by ``crnn_jax.data.render``;
  ``synth:inf[,...]`` an endless stream of them (for pretraining: no word image repeats).
- ``tsv:PATH[,include=FILE][,exclude=FILE]``: a folder with ``labels.tsv``
  (``relative/path<TAB>label`` per line); ``include``/``exclude`` name files listing
  relative paths, one per line, to keep or to leave out (validation splits).
- ``tfds:NAME[/CONFIG][:SPLIT][,data_dir=DIR]``, ``mjsynth:PATH[,split=...]``,
  ``lmdb:PATH``: see ``crnn_jax.data.formats``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from PIL import Image, UnidentifiedImageError


class BadExample(Exception):
  """One unusable example. ``reason`` is a short key used for counting."""

  def __init__(self, reason: str, key: str, message: str):
    super().__init__(f"{key}: {message}")
    self.reason = reason
    self.key = key
    self.message = message


class Source:
  """Base class: ``len()`` examples, ``read(i) -> (image, text, key)``.

  ``rendered`` sources make their images on demand (cheaply, deterministically): the
  training loader renders them as batches need them instead of indexing them first.
  """
  spec: str = ""
  rendered: bool = False

  def __len__(self) -> int:
    raise NotImplementedError

  def read(self, index: int):
    raise NotImplementedError

  def read_many(self, indices: Sequence[int]) -> list:
    """Reads several examples; each item is ``(image, text, key)`` or a ``BadExample``."""
    out = []
    for i in indices:
      try:
        out.append(self.read(i))
      except BadExample as e:
        out.append(e)
    return out


class TsvSource(Source):
  """A folder holding ``labels.tsv`` and the images it names (paths relative to the folder).

  Raises:
    ValueError: if the folder or its ``labels.tsv`` does not exist.
  """

  def __init__(self, folder: str | os.PathLike, labels_file: str = "labels.tsv", *,
               include: str | None = None, exclude: str | None = None, spec: str | None = None):
    self.folder = os.fspath(folder)
    self.spec = spec or f"tsv:{self.folder}"
    path = os.path.join(self.folder, labels_file)
    if not os.path.isdir(self.folder):
      raise ValueError(f"Dataset {self.spec}: folder {self.folder!r} does not exist.")
    if not os.path.isfile(path):
      raise ValueError(
          f"Dataset {self.spec}: no {labels_file} in {self.folder!r}. Expected one line per "
          f"image: relative/path<TAB>label.")
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
        raise ValueError(f"Dataset {self.spec}: {len(unknown)} path(s) of {option} file "
                         f"{path!r} are not in labels.tsv, e.g. {unknown[:3]}; the list does "
                         f"not belong to this folder.")
      keep = (lambda rel: rel in names) if option == "include" else (
          lambda rel: rel not in names)
      self.entries = [e for e in self.entries if e[0] is not None and keep(e[0])]

  def __len__(self) -> int:
    return len(self.entries)

  def read(self, index: int):
    rel, label, lineno, line = self.entries[index]
    if rel is None:
      raise BadExample("malformed_line", f"labels.tsv:{lineno}",
                       f"no TAB between path and label in {line[:80]!r}")
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
  (seed, index)."""
  rendered = True

  def __init__(self, n: int | None, *, seed: int = 0, height: int = 32,
               difficulty: float | None = None, charset: str | None = None,
               num_workers: int | None = None):
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
    self.endless = n is None
    self.spec = f"synth:{'inf' if n is None else n},seed={seed}" + (
        f",difficulty={difficulty}" if difficulty is not None else "")

  def __len__(self) -> int:
    return ENDLESS_LENGTH if self.endless else self.n

  def _renderer(self):
    if getattr(self, "_cached_renderer", None) is None:
      self._cached_renderer = self._render.Renderer(seed=self.seed, height=self.height,
                                                    **self.kwargs)
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
      pairs = self._render.render_range(self.seed, indices[0], indices[0] + len(indices),
                                        height=self.height, num_workers=self.num_workers,
                                        **self.kwargs)
      return [(img, text, f"synth[{i}]") for i, (img, text) in zip(indices, pairs)]
    return super().read_many(indices)


def _parse_options(text: str, spec: str) -> tuple[str, dict]:
  """'head,k=v,k2=v2' -> ('head', {'k': 'v', ...})."""
  head, *rest = text.split(",")
  opts = {}
  for item in rest:
    k, sep, v = item.partition("=")
    if not sep:
      raise ValueError(f"Dataset spec {spec!r}: option {item!r} is not key=value.")
    opts[k.strip()] = v.strip()
  return head, opts


def open_source(spec: str, *, height: int = 32, charset: str | None = None) -> Source:
  """The source a spec string names.

  Args:
    spec: ``synth:N|inf[,seed=S][,difficulty=D]``, ``tsv:PATH[,include=F][,exclude=F]``,
      ``mjsynth:PATH[,split=S]``,
      ``lmdb:PATH`` or ``tfds:NAME[/CONFIG][:SPLIT][,data_dir=DIR]`` (the last three in
      ``crnn_jax.data.formats``).
    height: render height for synthetic data.
    charset: characters synthetic text may use (default: the renderer's).

  Raises:
    ValueError: for an unknown kind or malformed spec, naming it and the kinds known.
  """
  kind, sep, rest = spec.partition(":")
  if not sep:
    raise ValueError(
        f"Dataset spec {spec!r} has no kind: use synth:N[,seed=S], tsv:PATH, mjsynth:PATH, "
        f"lmdb:PATH or tfds:NAME[/CONFIG][:SPLIT].")
  if kind == "synth":
    head, opts = _parse_options(rest, spec)
    unknown = set(opts) - {"seed", "difficulty", "workers"}
    if unknown:
      raise ValueError(f"Dataset spec {spec!r}: unknown option(s) {sorted(unknown)}; "
                       f"synth takes seed, difficulty, workers.")
    try:
      n = None if head.strip() == "inf" else int(head)
      seed = int(opts.get("seed", 0))
      difficulty = float(opts["difficulty"]) if "difficulty" in opts else None
      workers = int(opts["workers"]) if "workers" in opts else None
    except ValueError:
      raise ValueError(f"Dataset spec {spec!r}: expected synth:N[,seed=S][,difficulty=D] "
                       f"with integer N (or inf) and S.") from None
    if n is not None and n < 1:
      raise ValueError(f"Dataset spec {spec!r}: N must be at least 1.")
    return SynthSource(n, seed=seed, height=height, difficulty=difficulty, charset=charset,
                       num_workers=workers)
  if kind == "tsv":
    path, opts = _parse_options(rest, spec)
    unknown = set(opts) - {"include", "exclude"}
    if unknown:
      raise ValueError(f"Dataset spec {spec!r}: unknown option(s) {sorted(unknown)}; "
                       f"tsv takes include=FILE and exclude=FILE.")
    return TsvSource(os.path.expanduser(path), include=opts.get("include"),
                     exclude=opts.get("exclude"), spec=spec)
  if kind in ("mjsynth", "lmdb", "tfds"):
    from crnn_jax.data import formats  # imports TFDS / lmdb only for these kinds
    return formats.open_spec(kind, rest, spec)
  raise ValueError(f"Dataset spec {spec!r}: unknown kind {kind!r}; known kinds: synth, tsv, "
                   f"mjsynth, lmdb, tfds.")

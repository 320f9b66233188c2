"""The synthetic word renderer: MJSynth-like word crops, deterministic per (seed, index).

`Renderer(seed, height).render(index)` returns an RGB word image exactly `height` pixels tall
whose width follows the text, and the text it shows. Everything random about an image is
drawn from a generator seeded by the string f'{seed}/{index}', so an image depends only on
(seed, index, the Renderer's arguments) and the installed fonts, never on which process made
it or what it rendered before. `render_range` / `iter_range` render index ranges with
worker processes.

Rendering is sampling, then drawing: `Renderer.sample(index)` makes every random draw of
the image into a `RenderParams` (`render_sample`, types in `render_params`), and
`Renderer.draw(params)` makes the pixels from them with no random draw (`render_layout`,
`render_draw`). This module owns the Renderer's arguments, its lazily built tables, and
rendering ranges in worker processes.

How one image is made (`difficulty` scales every probability and magnitude below; at 0 the
image is dark, undistorted text on a light flat background):

1. Text: a word drawn from wordfreq's English list (probability proportional to
   frequency ** `frequency_power`), a random alphanumeric string or a digit string, in
   lower, UPPER or Capitalised case; only characters of `charset` are ever emitted.
2. Font: a family uniformly from `fonts.usable_faces(charset)`, then a style and weight. The
   font size is picked from a few cached sizes so that the final resampling scale is near 1.
3. Geometry: the text's ink mask is drawn once, then one Pillow transform does horizontal
   stretch, shear, rotation, perspective and (via a mesh of strips) a curved baseline, plus
   the crop and the scale to `height`. Crops are tight or loose around the ink, or around
   the font's ascender/descender lines.
4. Colour: text and background luminances are drawn with a minimum contrast; backgrounds
   are flat, gradients, blotchy textures or crops of the photos shipped with scikit-image,
   blended toward a flat colour just enough that the text stays readable. Optional outline,
   drop shadow and two-tone fill.
5. Degradations: low-resolution resampling, Gaussian blur, uneven lighting, Gaussian noise
   and JPEG compression.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from PIL import Image

from crnn_jax import host
from crnn_jax.charset import DEFAULT_CHARS
from crnn_jax.data import fonts, render_draw, render_layout, render_sample, workers
from crnn_jax.data.render_params import RenderParams


def _check(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(message)


# ---------------------------------------------------------------------------------------
# The renderer.


class Renderer:
  """Renders synthetic word images, deterministically for each (seed, index).

  Construction is cheap: fonts, the word list and the background photos are loaded on
  first use and cached per process. A Renderer pickles to its arguments plus the list of
  usable fonts (once known), so worker processes skip the glyph checks.

  Example:
    r = Renderer(seed=0, height=32)
    image, text = r.render(7)   # image: (32, W, 3) uint8 RGB
    params = r.sample(7)        # every random choice of image 7: a RenderParams
    image = r.draw(params)      # the same image, drawn with no random draw

  Args:
    seed: non-negative int; different seeds give different image streams.
    height: output height in pixels (>= 8); widths follow the text's aspect ratio.
    charset: the characters a text may use. Fonts that cannot draw all of them (or draw
      lowercase like capitals when both cases are in the charset) are skipped.
    min_len: shortest text, in characters (>= 1).
    max_len: longest text, in characters.
    difficulty: augmentation strength in [0, 1]. 0: dark undistorted text on a light
      flat background; 1: the full MJSynth-like variety (see the module docstring).
    text_mix: relative weights of (dictionary words, random alphanumeric strings, digit
      strings). A source that cannot produce text for `charset` gets weight 0.
    case_mix: relative weights of (lower, UPPER, Capitalised) for words and of (lower,
      UPPER, mixed) for random strings; a case the charset cannot spell is skipped.
    lexicon_size: how many of wordfreq's most frequent English words are considered.
    frequency_power: words are drawn with probability proportional to
      frequency ** frequency_power: 1 follows English usage, 0 is uniform over the list.
    font_sources: which of `fonts.SOURCES` to draw fonts from.
    soft: probability (times `difficulty`) that an image has the look of small text in a
      street photo: low contrast (35-100 luminance levels) and blur or low resolution that
      leaves the text 9-16 pixels of effective height (the default draws keep >= 16).
    extrude: probability (times `difficulty`) of 3-D lettering: the glyphs repeated along
      a direction in a darker or lighter shade, as on signs and shop fronts.
    Both are drawn from a generator of their own, so at 0 (the default) every image is the
    same as without them.

  Raises:
    ValueError: on an argument outside its range, an empty charset, or a charset that no
      installed font can draw.
  """

  def __init__(
      self,
      seed: int = 0,
      height: int = 32,
      *,
      charset: str = DEFAULT_CHARS,
      min_len: int = 1,
      max_len: int = 20,
      difficulty: float = 1.0,
      text_mix: Sequence[float] = (0.8, 0.1, 0.1),
      case_mix: Sequence[float] = (0.5, 0.2, 0.3),
      lexicon_size: int = 100_000,
      frequency_power: float = 0.5,
      font_sources: Sequence[str] = fonts.SOURCES,
      soft: float = 0.0,
      extrude: float = 0.0,
  ):
    _check(isinstance(seed, int) and seed >= 0, f"seed: expected an int >= 0, got {seed!r}")
    _check(isinstance(height, int) and height >= 8, f"height: expected an int >= 8, got {height!r}")
    _check(bool(charset), "charset: expected a non-empty string, got ''")
    _check(
        1 <= min_len <= max_len,
        f"min_len, max_len: expected 1 <= min_len <= max_len, got {min_len}, {max_len}",
    )
    _check(0.0 <= difficulty <= 1.0, f"difficulty: expected a value in [0, 1], got {difficulty}")
    _check(
        len(text_mix) == 3 and min(text_mix) >= 0 and sum(text_mix) > 0,
        f"text_mix: expected 3 non-negative weights with a positive sum, got {text_mix}",
    )
    _check(
        len(case_mix) == 3 and min(case_mix) >= 0 and sum(case_mix) > 0,
        f"case_mix: expected 3 non-negative weights with a positive sum, got {case_mix}",
    )
    _check(0.0 <= soft <= 1.0, f"soft: expected a probability in [0, 1], got {soft}")
    _check(0.0 <= extrude <= 1.0, f"extrude: expected a probability in [0, 1], got {extrude}")
    self.seed = seed
    self.height = height
    self.soft = float(soft)
    self.extrude = float(extrude)
    self.charset = "".join(dict.fromkeys(charset))
    self.min_len = min_len
    self.max_len = max_len
    self.difficulty = float(difficulty)
    self.text_mix = tuple(float(w) for w in text_mix)
    self.case_mix = tuple(float(w) for w in case_mix)
    self.lexicon_size = lexicon_size
    self.frequency_power = float(frequency_power)
    self.font_sources = tuple(font_sources)
    self._faces: tuple[fonts.FontFace, ...] | None = None
    self._families: tuple[tuple[fonts.FontFace, ...], ...] | None = None
    self._source_weights: tuple[float, ...] | None = None

  def __getstate__(self) -> dict[str, Any]:
    state = self.__dict__.copy()
    state["_families"] = None  # rebuilt from _faces
    return state

  def __repr__(self) -> str:
    return (
        f"Renderer(seed={self.seed}, height={self.height}, difficulty={self.difficulty}, "
        f"charset={self.charset!r})"
    )

  # -- lazily built tables -----------------------------------------------------------

  def prepare(self) -> Renderer:
    """Loads fonts, the word list and photos now rather than on the first render."""
    self._font_families()
    self._text_weights()
    render_draw.photos()
    render_draw.noise_table()
    return self

  def faces(self) -> tuple[fonts.FontFace, ...]:
    """The usable font faces (files) this renderer draws from."""
    if self._faces is None:
      faces = fonts.usable_faces(self.charset, self.font_sources)
      _check(
          bool(faces),
          f"charset: no installed font (sources {self.font_sources}) can draw " f"{self.charset!r}",
      )
      self._faces = faces
    return self._faces

  def _font_families(self) -> tuple[tuple[fonts.FontFace, ...], ...]:
    if self._families is None:
      self._families = render_sample.group_by_family(self.faces())
    return self._families

  def _words(self) -> tuple[tuple[str, ...], tuple[float, ...]]:
    return render_sample.lexicon(
        self.charset, self.min_len, self.max_len, self.lexicon_size, self.frequency_power
    )

  def _text_weights(self) -> tuple[float, ...]:
    if self._source_weights is None:
      words, random_, digits = self.text_mix
      if not self._words()[0]:
        words = 0.0
      if not any(c.isdigit() for c in self.charset):
        digits = 0.0
      _check(
          words + random_ + digits > 0,
          f"text_mix: no text source with positive weight {self.text_mix} can spell "
          f"charset {self.charset!r}",
      )
      self._source_weights = (words, random_, digits)
    return self._source_weights

  # -- sampling, then drawing --------------------------------------------------------

  def _sample_text(self, rng: random.Random) -> str:
    return render_sample.sample_text(
        rng,
        words=self._words(),
        source_weights=self._text_weights(),
        case_mix=self.case_mix,
        charset=self.charset,
        min_len=self.min_len,
        max_len=self.max_len,
    )

  def text(self, index: int) -> str:
    """The text image `index` shows, without rendering it (its first random draw)."""
    return self._sample_text(random.Random(f"{self.seed}/{int(index)}"))

  def sample(self, index: int) -> RenderParams:
    """Makes every random choice of image `index`: text, font, geometry, paint, degradations.

    Args:
      index: a non-negative int.

    Returns:
      The image's `RenderParams`; `draw` turns them into pixels.

    Raises:
      ValueError: if `index` is negative.
    """
    _check(
        isinstance(index, (int, np.integer)) and index >= 0,
        f"index: expected an int >= 0, got {index!r}",
    )
    rng = random.Random(f"{self.seed}/{int(index)}")
    d = self.difficulty
    text = self._sample_text(rng)
    face, weight = render_sample.sample_font(rng, self._font_families(), d)
    geometry = render_sample.sample_geometry(rng, d)
    # Measured (no draw) before the remaining draws: some of them follow the output width.
    layout = render_layout.measure(text, face, weight, geometry, self.height)
    # The scene-look draws come from their own generator, so that turning them on leaves
    # every other draw (and so the images with them off) unchanged.
    scene = random.Random(f"{self.seed}/{int(index)}/scene")
    soft = scene if scene.random() < self.soft * d else None
    extrude = scene if scene.random() < self.extrude * d else None
    paint = render_sample.sample_paint(rng, d, layout.size, soft=soft, extrude=extrude)
    degrade = render_sample.sample_degrade(rng, d, layout.size, layout.text_px, soft=soft)
    return RenderParams(text, face, weight, geometry, layout, paint, degrade)

  def draw(self, params: RenderParams) -> np.ndarray:
    """The image `params` describe, with no random draw: (height, W, 3) uint8 RGB."""
    return render_draw.draw(params)

  def render(self, index: int) -> tuple[np.ndarray, str]:
    """Renders image `index` of this renderer's stream: `draw(sample(index))`.

    Args:
      index: a non-negative int.

    Returns:
      (image, text): image is a (height, W, 3) uint8 RGB array, W >= 1 following the
      text's aspect ratio; text is the string shown, using only `charset`.

    Raises:
      ValueError: if `index` is negative.
    """
    params = self.sample(index)
    return self.draw(params), params.text


# ---------------------------------------------------------------------------------------
# Ranges and worker processes.


def available_fonts(
    charset: str = DEFAULT_CHARS, sources: Sequence[str] = fonts.SOURCES
) -> list[str]:
  """Returns the paths of the installed font files that can draw every char of `charset`.

  See `fonts.is_usable` for the check; files lacking a glyph are skipped.
  """
  return sorted(face.path for face in fonts.usable_faces(charset, tuple(sources)))


def font_families(
    charset: str = DEFAULT_CHARS, sources: Sequence[str] = fonts.SOURCES
) -> list[str]:
  """Returns the names of the font families with at least one usable file for `charset`."""
  return sorted({face.family for face in fonts.usable_faces(charset, tuple(sources))})


def encode_png(image: np.ndarray, text: str, grayscale: bool = True) -> tuple[bytes, str]:
  """Encodes a rendered image as PNG bytes (grayscale by default); passes `text` through.

  Meant as `iter_range(..., encode=encode_png)` so that the encoding runs in the workers.
  """
  picture = Image.fromarray(image)
  if grayscale:
    picture = picture.convert("L")
  buffer = io.BytesIO()
  picture.save(buffer, "PNG")
  return buffer.getvalue(), text


class _RenderChunk:
  """Chunk ``k`` of an index range, rendered (and encoded): what a worker process runs.

  Pickled once into each worker with its renderer (fonts checked already).
  """

  def __init__(self, renderer, encode, start: int, stop: int, chunk_size: int):
    self.renderer, self.encode = renderer, encode
    self.start, self.stop, self.chunk_size = start, stop, chunk_size

  def __len__(self) -> int:
    return -(-(self.stop - self.start) // self.chunk_size)

  def __call__(self, k: int) -> list[Any]:
    a = self.start + k * self.chunk_size
    results = [self.renderer.render(i) for i in range(a, min(a + self.chunk_size, self.stop))]
    return [self.encode(*r) for r in results] if self.encode is not None else results


# Ranges shorter than this render in-process when num_workers is None: starting a worker
# costs about as much as rendering a thousand images.
_MIN_PARALLEL_RANGE = 2000


def iter_renderer(
    renderer: Renderer,
    start: int,
    stop: int,
    num_workers: int | None = None,
    *,
    encode: Callable[[np.ndarray, str], Any] | None = None,
    chunk_size: int = 256,
) -> Iterator[Any]:
  """Yields `renderer.render(i)` (passed through `encode` if given) for i in [start, stop).

  Results come in index order. With worker processes (grain's, see `workers.prefetch`),
  each worker gets a pickled copy of `renderer` and renders chunks of `chunk_size`
  indices; at most two chunks per worker are ready ahead, so memory stays bounded for any
  range.

  Args:
    renderer: the Renderer to use (prepared once here so workers skip font checks).
    start: first index (>= 0).
    stop: one past the last index.
    num_workers: None picks one per core for ranges of 2000 or more and renders smaller
      ranges in-process; 0 or 1 renders in-process; >= 2 always uses that many workers.
    encode: a picklable function (image, text) -> anything, run in the worker, e.g.
      `encode_png`.
    chunk_size: indices per task sent to a worker.

  Raises:
    ValueError: if the range or `num_workers` is invalid.
  """
  _check(0 <= start <= stop, f"start, stop: expected 0 <= start <= stop, got {start}, {stop}")
  _check(
      num_workers is None or num_workers >= 0,
      f"num_workers: expected None or an int >= 0, got {num_workers}",
  )
  if num_workers is None:
    num_workers = host.usable_cores() if stop - start >= _MIN_PARALLEL_RANGE else 1
  renderer.prepare()
  if num_workers <= 1:
    for i in range(start, stop):
      result = renderer.render(i)
      yield encode(*result) if encode is not None else result
    return

  import grain

  chunk_size = max(1, min(chunk_size, -(-(stop - start) // (2 * num_workers))))
  chunks = _RenderChunk(renderer, encode, start, stop, chunk_size)
  dataset = grain.MapDataset.range(len(chunks)).map(chunks).to_iter_dataset()
  iterator = iter(workers.prefetch(dataset, num_workers=num_workers, buffer=2))
  try:
    for chunk in iterator:
      # grain hands arrays over in shared memory: copy them out so each segment is freed
      # as soon as its chunk is consumed, not at exit.
      yield from [
          tuple(np.array(x) if isinstance(x, np.ndarray) else x for x in item)
          if isinstance(item, tuple)
          else item
          for item in chunk
      ]
      del chunk
  finally:
    close = getattr(iterator, "close", None)
    if close is not None:
      close()


def iter_range(
    seed: int,
    start: int,
    stop: int,
    height: int = 32,
    num_workers: int | None = None,
    *,
    encode: Callable[[np.ndarray, str], Any] | None = None,
    **renderer_kwargs: Any,
) -> Iterator[Any]:
  """Yields `Renderer(seed, height, **renderer_kwargs).render(i)` for i in [start, stop).

  See `iter_renderer` for `num_workers` and `encode`.
  """
  yield from iter_renderer(
      Renderer(seed, height, **renderer_kwargs), start, stop, num_workers, encode=encode
  )


def render_range(
    seed: int,
    start: int,
    stop: int,
    height: int = 32,
    num_workers: int | None = None,
    **renderer_kwargs: Any,
) -> list[tuple[np.ndarray, str]]:
  """Returns [(image, text) for i in range(start, stop)] from `Renderer(seed, height, ...)`.

  Equal to rendering each index in-process; worker processes (one per core by default)
  are used for ranges of 2000 or more, see `iter_renderer`.
  """
  return list(iter_range(seed, start, stop, height, num_workers, **renderer_kwargs))

"""The synthetic word renderer: MJSynth-like word crops, deterministic per (seed, index).

`Renderer(seed, height).render(index)` returns an RGB word image exactly `height` pixels tall
whose width follows the text, and the text it shows. Everything random about an image is
drawn from a generator seeded by the string f'{seed}/{index}', so an image depends only on
(seed, index, the Renderer's arguments) and the installed fonts, never on which process made
it or what it rendered before. `render_range` / `iter_range` render index ranges with
worker processes.

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

Over 600 lines: `Renderer.render` draws its random choices inline between the steps above;
issue 14 item 2 samples them all into one parameters dataclass first and splits out pure
geometry, paint and degrade functions. Until then it is one file.
"""

from __future__ import annotations

import bisect
import colorsys
import concurrent.futures
import functools
import importlib.util
import io
import math
import multiprocessing
import os
import random
import string
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageOps

from crnn_jax import host
from crnn_jax.charset import DEFAULT_CHARS
from crnn_jax.data import fonts

# Photos shipped inside the scikit-image wheel (no download needed) used as backgrounds.
_SKIMAGE_PHOTOS = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "cell.png",
    "chelsea.png",
    "clock_motion.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "ihc.png",
    "moon.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
    "retina.jpg",
)
# Photos are kept at this many pixels on their short side: crops of 1-4x the output height
# then show texture at a useful scale, and resizing a crop stays cheap.
_PHOTO_SHORT_SIDE = 256

# Glyphs are rendered by FreeType once per font at an em of _GLYPH_EM * height pixels, and
# box-filtered by 2 ** level for smaller text; the level is picked so that the final
# resampling scale stays within about 0.7-1.4.
_GLYPH_EM = 2.0
_MAX_LEVEL = 3

# Below this luminance difference (0-255) text is hard to read even for a person.
_MIN_READABLE_CONTRAST = 30.0

# Ranges of a word's length for random strings and digit strings (clipped to min/max_len).
_RANDOM_MAX_LEN = 10
_DIGITS_MAX_LEN = 8


def _lerp(a: float, b: float, t: float) -> float:
  return a + (b - a) * t


def _check(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(message)


# ---------------------------------------------------------------------------------------
# Text sources.


@functools.lru_cache(maxsize=8)
def _lexicon(
    charset: str, min_len: int, max_len: int, size: int, power: float
) -> tuple[tuple[str, ...], tuple[float, ...]]:
  """Returns (words, cumulative weights) of wordfreq's `size` most frequent English words.

  A word is kept when its length is in [min_len, max_len], it has no digit (digit strings
  are their own source) and its lowercase or uppercase form uses only `charset`. Weights
  are frequency ** power.
  """
  import wordfreq  # ~0.1 s to load its list; only the renderers that draw words pay it.

  allowed = set(charset)
  words, cumulative, total = [], [], 0.0
  seen = 0
  # get_frequency_list()[i] holds the words of frequency 10 ** (-i / 100), in the order
  # of wordfreq.top_n_list.
  for centibels, bucket in enumerate(wordfreq.get_frequency_list("en")):
    for word in bucket:
      seen += 1
      if seen > size:
        return tuple(words), tuple(cumulative)
      if not min_len <= len(word) <= max_len or any(c.isdigit() for c in word):
        continue
      if set(word) <= allowed or set(word.upper()) <= allowed:
        total += 10.0 ** (-centibels / 100.0 * power)
        words.append(word)
        cumulative.append(total)
  return tuple(words), tuple(cumulative)


# ---------------------------------------------------------------------------------------
# Backgrounds and noise.


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[Image.Image, ...]:
  """The scikit-image sample photos as RGB images; () when scikit-image is not installed."""
  spec = importlib.util.find_spec("skimage")
  if spec is None or not spec.submodule_search_locations:
    return ()
  folder = os.path.join(spec.submodule_search_locations[0], "data")
  photos = []
  for name in _SKIMAGE_PHOTOS:
    path = os.path.join(folder, name)
    if not os.path.exists(path):
      continue
    with Image.open(path) as image:
      photo = image.convert("RGB")
    scale = _PHOTO_SHORT_SIDE / min(photo.size)
    if scale < 1:
      size = (round(photo.width * scale), round(photo.height * scale))
      photo = photo.resize(size, Image.Resampling.BOX)
    photos.append(photo)
  return tuple(photos)


@functools.lru_cache(maxsize=1)
def _noise_table() -> np.ndarray:
  """A fixed buffer of standard normal float32 samples; slices of it are image noise.

  Taking a slice at a random offset is much cheaper than drawing fresh samples and keeps
  images a function of (seed, index) alone.
  """
  return np.random.default_rng(20240613).standard_normal(1 << 20, dtype=np.float32)


def _noise(rng: random.Random, shape: tuple[int, ...]) -> np.ndarray:
  table = _noise_table()
  n = math.prod(shape)
  if n > table.size:
    return np.resize(table, shape)
  offset = rng.randrange(table.size - n + 1)
  return table[offset : offset + n].reshape(shape)


def _luminance(rgb: Sequence[float]) -> float:
  return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _colour(rng: random.Random, lum: float, saturation: float) -> tuple[int, int, int]:
  """A random hue at `saturation` whose luminance (ITU-R 601, 0-255) is `lum`."""
  rgb = colorsys.hsv_to_rgb(rng.random(), saturation, 1.0)
  y = _luminance(rgb)
  target = min(max(lum, 0.0), 255.0) / 255.0
  if target <= y:
    rgb = [c * target / y for c in rgb]
  else:  # brighter than the pure hue allows: move toward white
    t = (target - y) / (1.0 - y)
    rgb = [c + (1.0 - c) * t for c in rgb]
  return tuple(min(255, max(0, round(255 * c))) for c in rgb)


# ---------------------------------------------------------------------------------------
# Geometry: 3x3 homogeneous matrices acting on column vectors (x, y, 1).


def _translate(tx: float, ty: float) -> np.ndarray:
  return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
  """points: (N, 2) -> (N, 2) through a homography."""
  p = points @ matrix[:, :2].T + matrix[:, 2]
  return p[:, :2] / p[:, 2:3]


def _ink_outline(mask: np.ndarray) -> np.ndarray:
  """(N, 2) pixel-corner points whose convex hull contains the ink of `mask` (H, W) uint8.

  The outermost ink pixel of every row and column: enough for exact extents under any
  homography, far fewer points than the whole mask.
  """
  ink = mask > 64
  rows = np.flatnonzero(ink.any(axis=1))
  cols = np.flatnonzero(ink.any(axis=0))
  if rows.size == 0:
    h, w = mask.shape
    return np.array([[0.0, 0.0], [w, 0.0], [0.0, h], [w, h]])
  left = ink[rows].argmax(axis=1)
  right = ink.shape[1] - ink[rows, ::-1].argmax(axis=1)
  top = ink[:, cols].argmax(axis=0)
  bottom = ink.shape[0] - ink[::-1, cols].argmax(axis=0)
  xs = np.concatenate([left, right, cols, cols + 1, cols, cols + 1])
  ys = np.concatenate([rows + 0.5, rows + 0.5, top, top, bottom, bottom])
  return np.stack([xs, ys], axis=1).astype(np.float64)


@functools.lru_cache(maxsize=8)
def _group_by_family(
    faces: tuple[fonts.FontFace, ...],
) -> tuple[tuple[fonts.FontFace, ...], ...]:
  """Faces grouped by family, families sorted by name (cached: Renderers are cheap)."""
  by_family: dict[str, list[fonts.FontFace]] = {}
  for face in faces:
    by_family.setdefault(face.family, []).append(face)
  return tuple(tuple(v) for _, v in sorted(by_family.items()))


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
    _photos()
    _noise_table()
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
      self._families = _group_by_family(self.faces())
    return self._families

  def _words(self) -> tuple[tuple[str, ...], tuple[float, ...]]:
    return _lexicon(
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

  # -- sampling ----------------------------------------------------------------------

  def _spells(self, text: str) -> bool:
    return all(c in self.charset for c in text)

  def _sample_text(self, rng: random.Random) -> str:
    source = rng.choices(range(3), weights=self._text_weights())[0]
    if source == 0:
      words, cumulative = self._words()
      word = words[bisect.bisect_right(cumulative, rng.random() * cumulative[-1])]
      variants = (word, word.upper(), word[:1].upper() + word[1:])
      weights = [w if self._spells(v) else 0.0 for v, w in zip(variants, self.case_mix)]
      if sum(weights) == 0:  # e.g. only a case the mix gives weight 0
        weights = [1.0 if self._spells(v) else 0.0 for v in variants]
      return rng.choices(variants, weights=weights)[0]
    if source == 1:
      case = rng.choices(range(3), weights=self.case_mix)[0]
      letters = (string.ascii_lowercase, string.ascii_uppercase, string.ascii_letters)[case]
      pool = [c for c in self.charset if c in letters or not c.isalpha()] or self.charset
      length = rng.randint(self.min_len, max(self.min_len, min(self.max_len, _RANDOM_MAX_LEN)))
    else:
      pool = [c for c in self.charset if c.isdigit()]
      length = rng.randint(self.min_len, max(self.min_len, min(self.max_len, _DIGITS_MAX_LEN)))
    return "".join(rng.choice(pool) for _ in range(length))

  def _sample_font(self, rng: random.Random) -> tuple[fonts.FontFace, int]:
    """A family uniformly, then a style, then the weight nearest a drawn target weight.

    Few target weights keep the number of distinct fonts (and glyph caches) small.
    """
    d = self.difficulty
    family = rng.choice(self._font_families())
    italic = rng.random() < 0.1 + 0.15 * d
    faces = [f for f in family if f.italic == italic] or list(family)
    target = rng.choice((300, 400, 700, 900) if d >= 0.5 else (400, 700))
    options = [(f, w) for f in faces for w in f.weights]
    return min(options, key=lambda o: (abs(o[1] - target), o[1], o[0].path))

  def text(self, index: int) -> str:
    """The text image `index` shows, without rendering it (its first random draw)."""
    return self._sample_text(random.Random(f"{self.seed}/{int(index)}"))

  # -- rendering ---------------------------------------------------------------------

  def render(self, index: int) -> tuple[np.ndarray, str]:
    """Renders image `index` of this renderer's stream.

    Args:
      index: a non-negative int.

    Returns:
      (image, text): image is a (height, W, 3) uint8 RGB array, W >= 1 following the
      text's aspect ratio; text is the string shown, using only `charset`.

    Raises:
      ValueError: if `index` is negative.
    """
    _check(
        isinstance(index, (int, np.integer)) and index >= 0,
        f"index: expected an int >= 0, got {index!r}",
    )
    rng = random.Random(f"{self.seed}/{int(index)}")
    d = self.difficulty
    height = self.height

    text = self._sample_text(rng)
    face, weight = self._sample_font(rng)

    # Geometry, drawn in units independent of the font size.
    distort = d > 0
    stretch = math.exp(rng.uniform(-0.3, 0.3) * d)
    shear = rng.uniform(-0.35, 0.35) * d if rng.random() < 0.3 * d else 0.0
    angle = rng.gauss(0.0, 2.5 * d)
    if rng.random() < 0.05 * d:
      angle = rng.uniform(-12.0, 12.0)
    angle = math.radians(max(-15.0, min(15.0, angle)))
    # Perspective: (end-to-end size change, slant of the letters at the word's ends).
    persp = (rng.uniform(-0.12, 0.12) * d, rng.uniform(-0.2, 0.2) * d)
    if rng.random() >= 0.3 * d:
      persp = (0.0, 0.0)
    curve = rng.uniform(-0.4, 0.4) * d if rng.random() < 0.15 * d else 0.0
    tracking = rng.uniform(-0.02, 0.3) * d if rng.random() < 0.15 * d else 0.0
    line_box = rng.random() < 0.4  # crop around ascender/descender lines, else the ink
    if rng.random() < _lerp(0.0, 0.55, d):  # tight crop
      margins = [rng.uniform(-0.03, 0.12) for _ in range(2)] + [
          rng.uniform(0.0, 0.25) for _ in range(2)
      ]
    elif d > 0:  # loose crop
      margins = [rng.uniform(0.05, 0.3 * d + 0.15) for _ in range(2)] + [
          rng.uniform(0.1, 0.8 * d + 0.3) for _ in range(2)
      ]
    else:
      margins = [rng.uniform(0.08, 0.25) for _ in range(2)] + [
          rng.uniform(0.1, 0.4) for _ in range(2)
      ]
    top, bottom, left, right = margins

    # Font size: the crop height in em, estimated, sets the size that maps ~1:1.
    ascends = any(c.isupper() or c.isdigit() or c in "bdfhiklt" for c in text)
    descends = any(c in "gjpqyQJ" for c in text)
    ink_em = 0.95 if line_box else (0.72 if ascends else 0.5) + (0.22 if descends else 0.0)
    width_em = 0.55 * len(text) * stretch
    crop_em = (ink_em * abs(math.cos(angle)) + width_em * abs(math.sin(angle))) * (
        1.0 + top + bottom
    ) + abs(curve) * ink_em
    em = round(_GLYPH_EM * height)
    level = min(max(round(math.log2(em * crop_em / height)), 0), _MAX_LEVEL)
    glyphs = _glyphs(face.path, em, weight if face.variable else None)
    mask, points, baseline, ascent, descent = _draw_text(
        text, glyphs, level, tracking * em / 2**level
    )
    mask = Image.fromarray(mask)

    # Forward map from mask pixels to the (uncropped) output plane.
    cx, cy = points.mean(axis=0)
    half_w = max(1.0, 0.5 * (points[:, 0].max() - points[:, 0].min()))
    half_h = max(1.0, 0.5 * (points[:, 1].max() - points[:, 1].min()))
    c, s = math.cos(angle), math.sin(angle)
    wide = half_w * stretch
    forward = (
        np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [persp[0] / wide, persp[1] / wide, 1.0]])
        @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        @ np.array([[stretch, -shear, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        @ _translate(-cx, -cy)
    )
    plane = _apply(forward, points)
    curve_px = curve * 2.0 * half_h  # baseline offset at the word's ends
    curve_half = max(1.0, 0.5 * (plane[:, 0].max() - plane[:, 0].min()))
    if curve_px:
      plane[:, 1] += curve_px * (plane[:, 0] / curve_half) ** 2
    x0, x1 = plane[:, 0].min(), plane[:, 0].max()
    y0, y1 = plane[:, 1].min(), plane[:, 1].max()
    ink_height = max(1.0, y1 - y0)
    if line_box:
      # Extend to the ascender/descender lines, by at most 30% of the ink height each
      # way (script fonts have tall lines around small digits).
      guides = _apply(forward, np.array([[cx, baseline - ascent], [cx, baseline + descent]]))
      y0 = max(min(y0, guides[:, 1].min()), y0 - 0.3 * ink_height)
      y1 = min(max(y1, guides[:, 1].max()), y1 + 0.3 * ink_height)
    ref = max(1.0, y1 - y0)
    box = (x0 - left * ref, y0 - top * ref, x1 + right * ref, y1 + bottom * ref)
    scale = height / (box[3] - box[1])
    width = max(1, round((box[2] - box[0]) * scale))
    to_output = np.array([[scale, 0.0, -box[0] * scale], [0.0, scale, -box[1] * scale], [0, 0, 1]])

    if curve_px:
      text_mask = _mesh_transform(mask, (width, height), to_output, forward, curve_px, curve_half)
    else:
      inverse = np.linalg.inv(to_output @ forward)
      inverse /= inverse[2, 2]
      if distort and (persp[0] or persp[1]):
        text_mask = mask.transform(
            (width, height),
            Image.Transform.PERSPECTIVE,
            tuple(inverse.flat[:8]),
            Image.Resampling.BILINEAR,
        )
      else:
        text_mask = mask.transform(
            (width, height),
            Image.Transform.AFFINE,
            tuple(inverse.flat[:6]),
            Image.Resampling.BILINEAR,
        )

    # The scene-look draws come from their own generator, so that turning them on leaves
    # every other draw (and so the images with them off) unchanged.
    scene = random.Random(f"{self.seed}/{int(index)}/scene")
    soft = scene.random() < self.soft * d
    extrude = scene.random() < self.extrude * d
    image = self._paint(rng, text_mask, scene if soft else None, scene if extrude else None)
    image = self._degrade(rng, image, text_px=float(ink_height * scale))
    if soft:
      image = _soften(scene, image, text_px=float(ink_height * scale))
    return np.array(image), text

  def _paint(
      self,
      rng: random.Random,
      text_mask: Image.Image,
      soft: random.Random | None = None,
      extrude: random.Random | None = None,
  ) -> Image.Image:
    """Background, then optional shadow, extrusion and outline, then the text, in RGB.

    `soft` / `extrude`: the scene generator when the image has that look, else None.
    """
    d = self.difficulty
    size = text_mask.size
    # Text and background mean luminance, at least `contrast` apart.
    contrast = rng.uniform(_lerp(150.0, 100.0, d), 255.0)
    if soft is not None:
      contrast = soft.uniform(35.0, 100.0)
    text_lum = rng.uniform(0.0, 255.0 - contrast)
    bg_lum = text_lum + contrast
    if rng.random() < 0.4 * d:  # light text on a dark background
      text_lum, bg_lum = 255.0 - text_lum, 255.0 - bg_lum
    # How far background pixels may stray from bg_lum before the text gets hard to read.
    spread = max(0.0, contrast - _MIN_READABLE_CONTRAST) * 0.6
    saturation = rng.uniform(0.0, _lerp(0.15, 0.7, d))
    kind = rng.choices(
        ("flat", "gradient", "texture", "photo"),
        weights=(1.0 - 0.75 * d, 0.2 * d, 0.15 * d, 0.4 * d if _photos() else 0.0),
    )[0]
    image = _background(rng, kind, size, bg_lum, spread, saturation)

    if rng.random() < 0.12 * d:  # drop shadow
      offset = [max(1, round(rng.uniform(0.02, 0.08) * size[1])) for _ in range(2)]
      shadow = Image.new("L", size)
      shadow.paste(text_mask, (offset[0] * rng.choice((-1, 1)), offset[1]))
      shadow = shadow.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
      shadow_lum = max(0.0, min(text_lum, bg_lum) - 70.0)
      image.paste(_colour(rng, shadow_lum, saturation), (0, 0, *size), shadow)
    if extrude is not None:  # 3-D lettering: the glyphs stacked along a direction
      depth = extrude.uniform(0.04, 0.12) * size[1]
      steps = max(1, round(depth))
      angle = extrude.uniform(0.0, 2.0 * math.pi)
      side_lum = text_lum + extrude.choice((-1.0, 1.0)) * extrude.uniform(40.0, 90.0)
      side = _colour(extrude, max(0.0, min(255.0, side_lum)), saturation)
      for k in range(steps, 0, -1):
        shift = (
            round(k * depth / steps * math.cos(angle)),
            round(k * depth / steps * math.sin(angle)),
        )
        image.paste(side, (0, 0, *size), ImageChops.offset(text_mask, *shift))
    if rng.random() < 0.12 * d:  # outline
      outline = text_mask.filter(ImageFilter.MaxFilter(3 if size[1] < 48 else 5))
      image.paste(_colour(rng, 255.0 - text_lum, saturation), (0, 0, *size), outline)

    text_saturation = rng.uniform(0.0, _lerp(0.1, 0.8, d))
    if rng.random() < 0.1 * d:  # two-tone fill: a vertical gradient between two colours
      a = _colour(rng, text_lum - 20.0, text_saturation)
      b = _colour(rng, text_lum + 20.0, text_saturation)
      fill = Image.new("RGB", (1, 2))
      fill.putpixel((0, 0), a)
      fill.putpixel((0, 1), b)
      image.paste(fill.resize(size, Image.Resampling.BILINEAR), (0, 0), text_mask)
    else:
      image.paste(_colour(rng, text_lum, text_saturation), (0, 0, *size), text_mask)
    return image

  def _degrade(self, rng: random.Random, image: Image.Image, text_px: float) -> Image.Image:
    """Camera-like degradations, each with a probability that grows with difficulty.

    `text_px` (the text's height in output pixels) caps the softening, so that small
    text keeps about 16 pixels of effective height and stays readable.
    """
    d = self.difficulty
    width, height = image.size
    softness = rng.random()
    if softness < 0.15 * d:  # low resolution
      factor = min(rng.uniform(1.2, 1.8), text_px / 16.0)
      if factor > 1.1:
        small = (max(1, round(width / factor)), max(1, round(height / factor)))
        image = image.resize(small, Image.Resampling.BILINEAR).resize(
            (width, height), Image.Resampling.BILINEAR
        )
    elif softness < 0.3 * d:  # out of focus
      radius = rng.uniform(0.3, 0.9) * min(1.0, text_px / 24.0)
      image = image.filter(ImageFilter.GaussianBlur(radius))
    if rng.random() < 0.2 * d:  # uneven lighting
      light = Image.new("L", (2, 2))
      light.putdata([round(255 * rng.uniform(0.7, 1.0)) for _ in range(4)])
      light = light.resize((width, height), Image.Resampling.BILINEAR)
      image = ImageChops.multiply(image, Image.merge("RGB", (light, light, light)))
    if rng.random() < 0.4 * d:
      sigma = rng.uniform(2.0, 10.0)
      pixels = np.asarray(image, dtype=np.float32) + sigma * _noise(rng, (height, width, 1))
      image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if rng.random() < 0.3 * d:
      buffer = io.BytesIO()
      image.save(buffer, "JPEG", quality=rng.randint(35, 80))
      buffer.seek(0)
      image = Image.open(buffer).convert("RGB")
    return image


def _soften(rng: random.Random, image: Image.Image, text_px: float) -> Image.Image:
  """Low resolution then a little blur, leaving the text 9-16 pixels of effective height."""
  width, height = image.size
  factor = text_px / rng.uniform(9.0, 16.0)
  if factor > 1.1:
    small = (max(1, round(width / factor)), max(1, round(height / factor)))
    image = image.resize(small, Image.Resampling.BILINEAR).resize(
        (width, height), Image.Resampling.BICUBIC
    )
  return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.7)))


# Unit vectors every 15 degrees: a glyph keeps only its ink points extreme along one of them.
_DIRECTIONS = np.array(
    [[math.cos(a), math.sin(a)] for a in np.linspace(0.0, 2.0 * math.pi, 24, endpoint=False)]
)


def _extreme_points(points: np.ndarray) -> np.ndarray:
  """The points of (N, 2) `points` that lie furthest along each of `_DIRECTIONS`.

  Extents of a word after a small rotation, shear or perspective are decided by such
  points (exactly along the axes, to well under a pixel for the tilts used here).
  """
  best = np.unique((points @ _DIRECTIONS.T).argmax(axis=0))
  return points[best].astype(np.float32)


class _Glyphs:
  """Bitmaps, offsets, advances and extreme ink points of one font's characters, made once.

  Pillow renders every glyph anew on each call, and for fonts with heavy TrueType hinting
  that costs up to ~80 us per glyph; words are therefore assembled from cached glyphs.
  Level k holds the level-0 bitmaps box-filtered by 2 ** k (text at 1 / 2 ** k the size).
  Like Pillow's basic layout (used here), glyphs sit at whole-pixel pen positions and
  OpenType (GPOS) kerning is not applied.
  """

  def __init__(self, font: Any):
    self.font = font
    self._levels: list[dict[str, tuple[np.ndarray, float, float, float, np.ndarray]]] = [
        {} for _ in range(_MAX_LEVEL + 1)
    ]
    # Ascender height and descender depth at level 0, measured on typical letters.
    self.ascent = float(-font.getbbox("Hdkl", anchor="ls")[1])
    self.descent = float(max(font.getbbox("gjpqy", anchor="ls")[3], 0))

  def get(self, char: str, level: int) -> tuple[np.ndarray, float, float, float, np.ndarray]:
    """Returns (bitmap (h, w) uint8, left and top of the bitmap relative to the pen on
    the baseline, advance, extreme ink points (N, 2) in bitmap coordinates) at `level`."""
    cache = self._levels[level]
    glyph = cache.get(char)
    if glyph is not None:
      return glyph
    if level == 0:
      left, top, right, bottom = self.font.getbbox(char, anchor="ls")
      image = Image.new("L", (max(1, right - left), max(1, bottom - top)))
      ImageDraw.Draw(image).text((-left, -top), char, fill=255, font=self.font, anchor="ls")
      bitmap = np.asarray(image)
      advance = self.font.getlength(char)
      extremes = _extreme_points(_ink_outline(bitmap))
    else:
      base, left, top, advance, extremes = self.get(char, 0)
      factor = 2**level
      bitmap = np.asarray(Image.fromarray(base).reduce(factor))
      left, top, advance = left / factor, top / factor, advance / factor
      extremes = extremes / factor  # within a pixel of the reduced bitmap's own
    glyph = (bitmap, left, top, advance, extremes)
    cache[char] = glyph
    return glyph


@functools.lru_cache(maxsize=1024)
def _glyphs(path: str, em: int, weight: int | None) -> _Glyphs:
  return _Glyphs(fonts.load(path, em, weight))


def _draw_text(
    text: str, glyphs: _Glyphs, level: int, tracking: float
) -> tuple[np.ndarray, np.ndarray, float, float, float]:
  """Draws `text` white on black from cached glyphs at `level`.

  Returns:
    (mask, points, baseline, ascent, descent): mask (H, W) uint8; points (N, 2) the
    glyphs' extreme ink points; the baseline's y in the mask; the font's ascender height
    and descender depth at this level, in pixels.
  """
  placed = []
  pen = 0.0
  for char in text:
    bitmap, left, top, advance, extremes = glyphs.get(char, level)
    placed.append((bitmap, round(pen + left), round(top), extremes))
    pen += advance + tracking
  x0 = min(x for _, x, _, _ in placed)
  y0 = min(y for _, _, y, _ in placed)
  x1 = max(x + b.shape[1] for b, x, _, _ in placed)
  y1 = max(y + b.shape[0] for b, _, y, _ in placed)
  pad = 2
  mask = np.zeros((y1 - y0 + 2 * pad, x1 - x0 + 2 * pad), dtype=np.uint8)
  points = []
  for bitmap, x, y, extremes in placed:
    x, y = x - x0 + pad, y - y0 + pad
    region = mask[y : y + bitmap.shape[0], x : x + bitmap.shape[1]]
    np.maximum(region, bitmap, out=region)  # overlapping glyphs: the brighter wins
    points.append(extremes + (x, y))
  factor = 2.0**level
  return (
      mask,
      np.concatenate(points).astype(np.float64),
      float(pad - y0),
      glyphs.ascent / factor,
      glyphs.descent / factor,
  )


def _mesh_transform(
    mask: Image.Image,
    size: tuple[int, int],
    to_output: np.ndarray,
    forward: np.ndarray,
    curve_px: float,
    curve_half: float,
) -> Image.Image:
  """Warps `mask` with forward homography, then y += curve_px * (x / curve_half) ** 2.

  Done as a Pillow mesh of vertical strips, each mapped bilinearly from the exact inverse
  at its four corners.
  """
  width, height = size
  strips = max(4, min(32, width // 8))
  xs = np.linspace(0.0, width, strips + 1)
  corners = np.array([[x, y] for x in xs for y in (0.0, float(height))])
  plane = _apply(np.linalg.inv(to_output), corners)
  plane[:, 1] -= curve_px * (plane[:, 0] / curve_half) ** 2
  source = _apply(np.linalg.inv(forward), plane).reshape(strips + 1, 2, 2)
  mesh = []
  for i in range(strips):
    box = (round(xs[i]), 0, round(xs[i + 1]), height)
    if box[2] <= box[0]:
      continue
    (ul, ll), (ur, lr) = source[i], source[i + 1]
    mesh.append((box, (*ul, *ll, *lr, *ur)))
  return mask.transform(size, Image.Transform.MESH, mesh, Image.Resampling.BILINEAR)


def _background(
    rng: random.Random,
    kind: str,
    size: tuple[int, int],
    lum: float,
    spread: float,
    saturation: float,
) -> Image.Image:
  """An RGB background of mean luminance ~`lum` whose pixels stay within ~`spread` of it."""
  width, height = size
  if kind == "gradient":
    corners = Image.new("RGB", (2, 2))
    corners.putdata(
        [_colour(rng, lum + rng.uniform(-spread, spread), saturation) for _ in range(4)]
    )
    return corners.resize(size, Image.Resampling.BILINEAR)
  if kind == "texture":
    dev = rng.uniform(0.3, 1.0) * spread
    a = _colour(rng, lum - dev, saturation)
    b = _colour(rng, lum + dev, saturation)
    cell = rng.uniform(2.0, 8.0)
    small = (max(2, round(width / cell)), max(2, round(height / cell)))
    blotches = np.clip(128.0 + 60.0 * _noise(rng, (small[1], small[0])), 0, 255)
    blotches = Image.fromarray(blotches.astype(np.uint8)).resize(size, Image.Resampling.BICUBIC)
    return ImageOps.colorize(blotches, a, b)
  if kind == "photo":
    photos = _photos()
    photo = photos[rng.randrange(len(photos))]
    crop_h = min(photo.height, height * rng.uniform(1.0, 4.0))
    crop_w = min(photo.width, crop_h * width / height)
    crop_h = crop_w * height / width
    x = rng.uniform(0.0, photo.width - crop_w)
    y = rng.uniform(0.0, photo.height - crop_h)
    crop = photo.resize(size, Image.Resampling.BILINEAR, box=(x, y, x + crop_w, y + crop_h))
    if rng.random() < 0.5:
      crop = ImageOps.mirror(crop)
    gray = np.asarray(crop.convert("L"), dtype=np.float32)
    mean, std = float(gray.mean()), float(gray.std())
    # Blend toward a flat colour: photo weight alpha keeps the mean at `lum` and the
    # pixels within `spread` (2 std) of it.
    alpha = min(rng.uniform(0.4, 1.0), spread / (2.0 * std + 1e-3))
    if mean > lum:
      alpha = min(alpha, lum / mean)
    elif mean < lum:
      alpha = min(alpha, (255.0 - lum) / (255.0 - mean))
    if alpha >= 0.999:
      return crop
    flat_lum = (lum - alpha * mean) / (1.0 - alpha)
    flat = Image.new("RGB", size, _colour(rng, flat_lum, saturation))
    return Image.blend(flat, crop, alpha)
  return Image.new("RGB", size, _colour(rng, lum, saturation))


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


_worker_state: dict[str, Any] = {}


def _start_worker(renderer: Renderer, encode: Callable[..., Any] | None) -> None:
  _worker_state["renderer"] = renderer
  _worker_state["encode"] = encode


def _render_chunk(start: int, stop: int) -> list[Any]:
  renderer, encode = _worker_state["renderer"], _worker_state["encode"]
  results = [renderer.render(i) for i in range(start, stop)]
  return [encode(*r) for r in results] if encode is not None else results


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

  Results come in index order. With worker processes ('spawn', safe next to JAX), each
  worker gets a pickled copy of `renderer` and renders chunks of `chunk_size` indices; at
  most two chunks per worker are in flight, so memory stays bounded for any range.

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

  chunk_size = max(1, min(chunk_size, -(-(stop - start) // (2 * num_workers))))
  chunks = iter([(a, min(a + chunk_size, stop)) for a in range(start, stop, chunk_size)])
  executor = concurrent.futures.ProcessPoolExecutor(
      max_workers=num_workers,
      mp_context=multiprocessing.get_context("spawn"),
      initializer=_start_worker,
      initargs=(renderer, encode),
  )
  try:
    pending: list[concurrent.futures.Future] = []
    for chunk in chunks:
      pending.append(executor.submit(_render_chunk, *chunk))
      if len(pending) >= 2 * num_workers:
        yield from pending.pop(0).result()
    for future in pending:
      yield from future.result()
  finally:
    executor.shutdown(wait=True, cancel_futures=True)


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

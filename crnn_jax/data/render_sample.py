"""Every random draw of a synthetic word image: the text, font, geometry, paint and
degradation parts of its `RenderParams`.

`Renderer.sample` calls these in a fixed order on one generator seeded per image, so the
order of the draws below is part of what an image is: reordering two of them, or changing
a distribution, changes every image rendered after it. `difficulty` (`d`) scales every
probability and magnitude; at 0 the image is dark, undistorted text on a light flat
background.

Some draws depend on measured sizes: how far into the noise table an offset may reach, or
a photo crop's box, follows the output width. So the caller measures the word
(`render_layout.measure`, no draw) between the geometry draws and the paint draws, and
passes the output size in.
"""

from __future__ import annotations

import bisect
import functools
import math
import random
import string
from collections.abc import Sequence

from crnn_jax.data import fonts, render_draw
from crnn_jax.data.render_params import (
    RGB,
    Background,
    Degrade,
    Extrusion,
    Flat,
    Geometry,
    Gradient,
    Paint,
    Photo,
    Shadow,
    Texture,
)

# Below this luminance difference (0-255) text is hard to read even for a person.
_MIN_READABLE_CONTRAST = 30.0

# Ranges of a word's length for random strings and digit strings (clipped to min/max_len).
_RANDOM_MAX_LEN = 10
_DIGITS_MAX_LEN = 8


def _lerp(a: float, b: float, t: float) -> float:
  return a + (b - a) * t


# ---------------------------------------------------------------------------------------
# Text and font.


@functools.lru_cache(maxsize=8)
def lexicon(
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


def sample_text(
    rng: random.Random,
    *,
    words: tuple[tuple[str, ...], tuple[float, ...]],
    source_weights: Sequence[float],
    case_mix: Sequence[float],
    charset: str,
    min_len: int,
    max_len: int,
) -> str:
  """A dictionary word, random alphanumeric string or digit string, in a drawn case.

  Args:
    rng: the image's generator.
    words: (words, cumulative weights) from `lexicon`.
    source_weights: relative weights of (words, random strings, digit strings).
    case_mix: relative weights of (lower, UPPER, Capitalised) for words and of (lower,
      UPPER, mixed) for random strings.
    charset: the characters the text may use.
    min_len: shortest text.
    max_len: longest text.
  """

  def spells(text: str) -> bool:
    return all(c in charset for c in text)

  source = rng.choices(range(3), weights=source_weights)[0]
  if source == 0:
    word_list, cumulative = words
    word = word_list[bisect.bisect_right(cumulative, rng.random() * cumulative[-1])]
    variants = (word, word.upper(), word[:1].upper() + word[1:])
    weights = [w if spells(v) else 0.0 for v, w in zip(variants, case_mix)]
    if sum(weights) == 0:  # e.g. only a case the mix gives weight 0
      weights = [1.0 if spells(v) else 0.0 for v in variants]
    return rng.choices(variants, weights=weights)[0]
  if source == 1:
    case = rng.choices(range(3), weights=case_mix)[0]
    letters = (string.ascii_lowercase, string.ascii_uppercase, string.ascii_letters)[case]
    pool = [c for c in charset if c in letters or not c.isalpha()] or charset
    length = rng.randint(min_len, max(min_len, min(max_len, _RANDOM_MAX_LEN)))
  else:
    pool = [c for c in charset if c.isdigit()]
    length = rng.randint(min_len, max(min_len, min(max_len, _DIGITS_MAX_LEN)))
  return "".join(rng.choice(pool) for _ in range(length))


@functools.lru_cache(maxsize=8)
def group_by_family(
    faces: tuple[fonts.FontFace, ...],
) -> tuple[tuple[fonts.FontFace, ...], ...]:
  """Faces grouped by family, families sorted by name (cached: Renderers are cheap)."""
  by_family: dict[str, list[fonts.FontFace]] = {}
  for face in faces:
    by_family.setdefault(face.family, []).append(face)
  return tuple(tuple(v) for _, v in sorted(by_family.items()))


def sample_font(
    rng: random.Random, families: Sequence[Sequence[fonts.FontFace]], d: float
) -> tuple[fonts.FontFace, int]:
  """A family uniformly, then a style, then the weight nearest a drawn target weight.

  Few target weights keep the number of distinct fonts (and glyph caches) small.
  """
  family = rng.choice(families)
  italic = rng.random() < 0.1 + 0.15 * d
  faces = [f for f in family if f.italic == italic] or list(family)
  target = rng.choice((300, 400, 700, 900) if d >= 0.5 else (400, 700))
  options = [(f, w) for f in faces for w in f.weights]
  return min(options, key=lambda o: (abs(o[1] - target), o[1], o[0].path))


# ---------------------------------------------------------------------------------------
# Geometry.


def sample_geometry(rng: random.Random, d: float) -> Geometry:
  """Stretch, shear, rotation, perspective, curve, tracking and the crop's margins."""
  stretch = math.exp(rng.uniform(-0.3, 0.3) * d)
  shear = rng.uniform(-0.35, 0.35) * d if rng.random() < 0.3 * d else 0.0
  angle = rng.gauss(0.0, 2.5 * d)
  if rng.random() < 0.05 * d:
    angle = rng.uniform(-12.0, 12.0)
  angle = math.radians(max(-15.0, min(15.0, angle)))
  persp = (rng.uniform(-0.12, 0.12) * d, rng.uniform(-0.2, 0.2) * d)
  if rng.random() >= 0.3 * d:  # always at d = 0
    persp = (0.0, 0.0)
  curve = rng.uniform(-0.4, 0.4) * d if rng.random() < 0.15 * d else 0.0
  tracking = rng.uniform(-0.02, 0.3) * d if rng.random() < 0.15 * d else 0.0
  line_box = rng.random() < 0.4
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
  return Geometry(
      stretch=stretch,
      shear=shear,
      angle=angle,
      perspective=persp,
      curve=curve,
      tracking=tracking,
      line_box=line_box,
      margins=tuple(margins),
  )


# ---------------------------------------------------------------------------------------
# Paint.


def _colour(rng: random.Random, lum: float, saturation: float) -> RGB:
  """A random hue at `saturation` whose luminance is `lum` (one draw: the hue)."""
  return render_draw.colour(rng.random(), lum, saturation)


def _noise_offset(rng: random.Random, n: int) -> int | None:
  """Where `n` noise samples start in the noise table; None (no draw) when `n` is larger
  than the table, which drawing then tiles."""
  if n > render_draw.NOISE_TABLE_SIZE:
    return None
  return rng.randrange(render_draw.NOISE_TABLE_SIZE - n + 1)


def _sample_background(
    rng: random.Random,
    kind: str,
    size: tuple[int, int],
    lum: float,
    spread: float,
    saturation: float,
) -> Background:
  """A background of mean luminance ~`lum` whose pixels stay within ~`spread` of it."""
  width, height = size
  if kind == "gradient":
    return Gradient(
        tuple(_colour(rng, lum + rng.uniform(-spread, spread), saturation) for _ in range(4))
    )
  if kind == "texture":
    dev = rng.uniform(0.3, 1.0) * spread
    dark = _colour(rng, lum - dev, saturation)
    light = _colour(rng, lum + dev, saturation)
    cell = rng.uniform(2.0, 8.0)
    cells = (max(2, round(width / cell)), max(2, round(height / cell)))
    return Texture(dark, light, cells, _noise_offset(rng, cells[0] * cells[1]))
  if kind == "photo":
    photos = render_draw.photos()
    index = rng.randrange(len(photos))
    photo = photos[index]
    crop_h = min(photo.height, height * rng.uniform(1.0, 4.0))
    crop_w = min(photo.width, crop_h * width / height)
    crop_h = crop_w * height / width
    x = rng.uniform(0.0, photo.width - crop_w)
    y = rng.uniform(0.0, photo.height - crop_h)
    mirror = rng.random() < 0.5
    fields = (index, (x, y, x + crop_w, y + crop_h), mirror, lum, spread, saturation)
    spec = Photo(*fields, max_alpha=rng.uniform(0.4, 1.0), flat_hue=None)
    # The flat colour's hue is drawn only when a flat colour is blended in. Below
    # PHOTO_ALONE `max_alpha` decides that; above it (about 1 photo in 600) the crop's
    # own statistics do, so they are measured here, as drawing will measure them again.
    if spec.max_alpha < render_draw.PHOTO_ALONE or (
        render_draw.photo_blend(spec, size)[1] < render_draw.PHOTO_ALONE
    ):
      spec = Photo(*fields, max_alpha=spec.max_alpha, flat_hue=rng.random())
    return spec
  return Flat(_colour(rng, lum, saturation))


def sample_paint(
    rng: random.Random,
    d: float,
    size: tuple[int, int],
    *,
    soft: random.Random | None = None,
    extrude: random.Random | None = None,
) -> Paint:
  """Text and background colours at a readable contrast, the background and decorations.

  Args:
    rng: the image's generator.
    d: difficulty.
    size: the output's (width, height).
    soft: the scene generator when the image has the `soft` look (lower contrast), else
      None.
    extrude: the scene generator when the image has 3-D lettering, else None.
  """
  height = size[1]
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
      weights=(1.0 - 0.75 * d, 0.2 * d, 0.15 * d, 0.4 * d if render_draw.photos() else 0.0),
  )[0]
  background = _sample_background(rng, kind, size, bg_lum, spread, saturation)

  shadow = None
  if rng.random() < 0.12 * d:
    dx, dy = (max(1, round(rng.uniform(0.02, 0.08) * height)) for _ in range(2))
    dx *= rng.choice((-1, 1))
    blur = rng.uniform(0.3, 1.5)
    shadow_lum = max(0.0, min(text_lum, bg_lum) - 70.0)
    shadow = Shadow((dx, dy), blur, _colour(rng, shadow_lum, saturation))
  extrusion = None
  if extrude is not None:
    depth = extrude.uniform(0.04, 0.12) * height
    angle = extrude.uniform(0.0, 2.0 * math.pi)
    side_lum = text_lum + extrude.choice((-1.0, 1.0)) * extrude.uniform(40.0, 90.0)
    extrusion = Extrusion(
        depth, angle, _colour(extrude, max(0.0, min(255.0, side_lum)), saturation)
    )
  outline = None
  if rng.random() < 0.12 * d:
    outline = _colour(rng, 255.0 - text_lum, saturation)

  text_saturation = rng.uniform(0.0, _lerp(0.1, 0.8, d))
  if rng.random() < 0.1 * d:  # two-tone fill
    fill = (
        _colour(rng, text_lum - 20.0, text_saturation),
        _colour(rng, text_lum + 20.0, text_saturation),
    )
  else:
    fill = (_colour(rng, text_lum, text_saturation),)
  return Paint(background, shadow, extrusion, outline, fill)


# ---------------------------------------------------------------------------------------
# Degradations.


def sample_degrade(
    rng: random.Random,
    d: float,
    size: tuple[int, int],
    text_px: float,
    soft: random.Random | None = None,
) -> Degrade:
  """Camera-like degradations, each with a probability that grows with difficulty.

  `text_px` (the text's height in output pixels) caps the softening, so that small text
  keeps about 16 pixels of effective height and stays readable; the `soft` look (drawn
  from `soft`, the scene generator, when the image has it) leaves it 9-16 pixels.
  """
  width, height = size
  downscale = blur = None
  softness = rng.random()
  if softness < 0.15 * d:  # low resolution
    factor = min(rng.uniform(1.2, 1.8), text_px / 16.0)
    downscale = factor if factor > 1.1 else None
  elif softness < 0.3 * d:  # out of focus
    blur = rng.uniform(0.3, 0.9) * min(1.0, text_px / 24.0)
  lighting = None
  if rng.random() < 0.2 * d:  # uneven lighting
    lighting = tuple(round(255 * rng.uniform(0.7, 1.0)) for _ in range(4))
  noise = None
  if rng.random() < 0.4 * d:
    sigma = rng.uniform(2.0, 10.0)
    noise = (sigma, _noise_offset(rng, height * width))
  jpeg_quality = rng.randint(35, 80) if rng.random() < 0.3 * d else None
  soft_downscale = soft_blur = None
  if soft is not None:
    factor = text_px / soft.uniform(9.0, 16.0)
    soft_downscale = factor if factor > 1.1 else None
    soft_blur = soft.uniform(0.2, 0.7)
  return Degrade(downscale, blur, lighting, noise, jpeg_quality, soft_downscale, soft_blur)

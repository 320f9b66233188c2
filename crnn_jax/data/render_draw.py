"""Draws a synthetic word image from its `RenderParams`, without any random draw.

`draw(params)` warps the text mask (`render_layout`), paints the background, shadow,
extrusion, outline and text (`paint`), then applies the camera-like degradations
(`degrade`). Where a step needs randomness-like variety (noise, blotchy textures, photo
crops) the parameters say which: an offset into a fixed table of normal samples, a photo
index and a crop box. This module also owns those fixed inputs: the noise table and the
photos shipped with scikit-image.
"""

from __future__ import annotations

import colorsys
import functools
import importlib.util
import io
import math
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageChops, ImageFilter, ImageOps

from crnn_jax.data import render_layout
from crnn_jax.data.render_params import (
    RGB,
    Background,
    Degrade,
    Flat,
    Gradient,
    Paint,
    Photo,
    RenderParams,
    Texture,
)

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

# Samples in the noise table; image noise is a slice of it at an offset.
NOISE_TABLE_SIZE = 1 << 20

# A photo blended with at least this weight is used as it is, with no flat colour.
PHOTO_ALONE = 0.999


@functools.lru_cache(maxsize=1)
def photos() -> tuple[Image.Image, ...]:
  """The scikit-image sample photos as RGB images; () when scikit-image is not installed."""
  spec = importlib.util.find_spec("skimage")
  if spec is None or not spec.submodule_search_locations:
    return ()
  folder = os.path.join(spec.submodule_search_locations[0], "data")
  loaded = []
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
    loaded.append(photo)
  return tuple(loaded)


@functools.lru_cache(maxsize=1)
def noise_table() -> np.ndarray:
  """A fixed buffer of `NOISE_TABLE_SIZE` standard normal float32 samples.

  Taking a slice at a sampled offset is much cheaper than drawing fresh samples and keeps
  images a function of their parameters alone.
  """
  return np.random.default_rng(20240613).standard_normal(NOISE_TABLE_SIZE, dtype=np.float32)


def _noise(shape: tuple[int, ...], offset: int | None) -> np.ndarray:
  """Standard normal noise of `shape` from the table at `offset` (None: the table tiled)."""
  table = noise_table()
  if offset is None:
    return np.resize(table, shape)
  return table[offset : offset + math.prod(shape)].reshape(shape)


def _luminance(rgb: Sequence[float]) -> float:
  return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def colour(hue: float, lum: float, saturation: float) -> RGB:
  """The colour of `hue` (in [0, 1)) at `saturation` whose luminance (ITU-R 601, 0-255)
  is `lum` (clipped to 0-255)."""
  rgb = colorsys.hsv_to_rgb(hue, saturation, 1.0)
  y = _luminance(rgb)
  target = min(max(lum, 0.0), 255.0) / 255.0
  if target <= y:
    rgb = [c * target / y for c in rgb]
  else:  # brighter than the pure hue allows: move toward white
    t = (target - y) / (1.0 - y)
    rgb = [c + (1.0 - c) * t for c in rgb]
  return tuple(min(255, max(0, round(255 * c))) for c in rgb)


def photo_blend(background: Photo, size: tuple[int, int]) -> tuple[Image.Image, float, float]:
  """The photo crop of `background` at `size`, the weight it gets and its mean luminance.

  The weight (at most `max_alpha`) keeps the blend's mean at `lum` and its pixels within
  `spread` (two standard deviations) of it; at `PHOTO_ALONE` or more the crop is used alone.
  """
  crop = photos()[background.photo].resize(size, Image.Resampling.BILINEAR, box=background.box)
  if background.mirror:
    crop = ImageOps.mirror(crop)
  gray = np.asarray(crop.convert("L"), dtype=np.float32)
  mean, std = float(gray.mean()), float(gray.std())
  lum = background.lum
  alpha = min(background.max_alpha, background.spread / (2.0 * std + 1e-3))
  if mean > lum:
    alpha = min(alpha, lum / mean)
  elif mean < lum:
    alpha = min(alpha, (255.0 - lum) / (255.0 - mean))
  return crop, alpha, mean


def background(spec: Background, size: tuple[int, int]) -> Image.Image:
  """The RGB background `spec` describes, of `size` (width, height)."""
  width, height = size
  if isinstance(spec, Gradient):
    corners = Image.new("RGB", (2, 2))
    corners.putdata(list(spec.corners))
    return corners.resize(size, Image.Resampling.BILINEAR)
  if isinstance(spec, Texture):
    cells_w, cells_h = spec.cells
    blotches = np.clip(128.0 + 60.0 * _noise((cells_h, cells_w), spec.noise_offset), 0, 255)
    blotches = Image.fromarray(blotches.astype(np.uint8)).resize(size, Image.Resampling.BICUBIC)
    return ImageOps.colorize(blotches, spec.dark, spec.light)
  if isinstance(spec, Photo):
    crop, alpha, mean = photo_blend(spec, size)
    if alpha >= PHOTO_ALONE:
      return crop
    flat_lum = (spec.lum - alpha * mean) / (1.0 - alpha)
    flat = Image.new("RGB", size, colour(spec.flat_hue, flat_lum, spec.saturation))
    return Image.blend(flat, crop, alpha)
  if isinstance(spec, Flat):
    return Image.new("RGB", size, spec.colour)
  raise ValueError(f"background: expected Flat, Gradient, Texture or Photo, got {spec!r}")


def paint(text_mask: Image.Image, spec: Paint) -> Image.Image:
  """Background, then optional shadow, extrusion and outline, then the text, in RGB.

  Args:
    text_mask: the text's coverage ('L', 255 on the ink), of the output's size.
    spec: the colours and decorations.
  """
  size = text_mask.size
  image = background(spec.background, size)
  if spec.shadow is not None:
    shadow = Image.new("L", size)
    shadow.paste(text_mask, spec.shadow.offset)
    shadow = shadow.filter(ImageFilter.GaussianBlur(spec.shadow.blur))
    image.paste(spec.shadow.colour, (0, 0, *size), shadow)
  if spec.extrusion is not None:  # 3-D lettering: the glyphs stacked along a direction
    depth, angle = spec.extrusion.depth, spec.extrusion.angle
    steps = max(1, round(depth))
    for k in range(steps, 0, -1):
      shift = (
          round(k * depth / steps * math.cos(angle)),
          round(k * depth / steps * math.sin(angle)),
      )
      image.paste(spec.extrusion.colour, (0, 0, *size), ImageChops.offset(text_mask, *shift))
  if spec.outline is not None:
    outline = text_mask.filter(ImageFilter.MaxFilter(3 if size[1] < 48 else 5))
    image.paste(spec.outline, (0, 0, *size), outline)
  if len(spec.fill) == 2:  # two-tone fill: a vertical gradient between two colours
    fill = Image.new("RGB", (1, 2))
    fill.putpixel((0, 0), spec.fill[0])
    fill.putpixel((0, 1), spec.fill[1])
    image.paste(fill.resize(size, Image.Resampling.BILINEAR), (0, 0), text_mask)
  else:
    image.paste(spec.fill[0], (0, 0, *size), text_mask)
  return image


def _downscale(image: Image.Image, factor: float, up: Image.Resampling) -> Image.Image:
  """Shrinks `image` by `factor` (bilinear) and enlarges it back with `up`."""
  width, height = image.size
  small = (max(1, round(width / factor)), max(1, round(height / factor)))
  return image.resize(small, Image.Resampling.BILINEAR).resize((width, height), up)


def degrade(image: Image.Image, spec: Degrade) -> Image.Image:
  """Applies the degradations of `spec` to an RGB `image`, in the order of its fields."""
  width, height = image.size
  if spec.downscale is not None:
    image = _downscale(image, spec.downscale, Image.Resampling.BILINEAR)
  if spec.blur is not None:
    image = image.filter(ImageFilter.GaussianBlur(spec.blur))
  if spec.lighting is not None:
    light = Image.new("L", (2, 2))
    light.putdata(list(spec.lighting))
    light = light.resize((width, height), Image.Resampling.BILINEAR)
    image = ImageChops.multiply(image, Image.merge("RGB", (light, light, light)))
  if spec.noise is not None:
    sigma, offset = spec.noise
    pixels = np.asarray(image, dtype=np.float32) + sigma * _noise((height, width, 1), offset)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
  if spec.jpeg_quality is not None:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=spec.jpeg_quality)
    buffer.seek(0)
    image = Image.open(buffer).convert("RGB")
  if spec.soft_downscale is not None:
    image = _downscale(image, spec.soft_downscale, Image.Resampling.BICUBIC)
  if spec.soft_blur is not None:
    image = image.filter(ImageFilter.GaussianBlur(spec.soft_blur))
  return image


def draw(params: RenderParams) -> np.ndarray:
  """The image `params` describe: (height, width, 3) uint8 RGB, `params.layout.size`."""
  mask = render_layout.text_mask(params.text, params.face, params.weight, params.layout)
  image = degrade(paint(mask, params.paint), params.degrade)
  return np.array(image)

"""Where a synthetic word's ink goes: glyph caches, the `Layout` of a word and its text mask.

`measure(text, face, weight, geometry, height)` measures the word without drawing it: the
font size and glyph level that make the final resampling scale near 1, where each glyph
sits in the glyph mask, the homography from that mask to the output with the crop and the
output width, and from it the data of the one Pillow transform (affine, perspective, or a
mesh of strips for a curved baseline) that maps output pixels back into the mask.
`text_mask(...)` then pastes the cached glyphs in place and applies that transform. Both
are deterministic: nothing here draws at random.

Matrices are 3x3 homogeneous, acting on column vectors (x, y, 1).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from crnn_jax.data import fonts
from crnn_jax.data.render_params import Geometry, Layout

# Glyphs are rendered by FreeType once per font at an em of _GLYPH_EM * height pixels, and
# box-filtered by 2 ** level for smaller text; the level is picked so that the final
# resampling scale stays within about 0.7-1.4.
_GLYPH_EM = 2.0
_MAX_LEVEL = 3

# Blank pixels around the glyphs in the mask, so that bilinear warps fade out at the edges.
_PAD = 2


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


def _font_glyphs(face: fonts.FontFace, weight: int, em: int) -> _Glyphs:
  return _glyphs(face.path, em, weight if face.variable else None)


# A glyph placed in the mask: (bitmap, x, y of its top-left corner, extreme ink points).
_Placed = tuple[np.ndarray, int, int, np.ndarray]


def _place(
    text: str, glyphs: _Glyphs, level: int, tracking: float
) -> tuple[list[_Placed], tuple[int, int], float]:
  """Places the glyphs of `text` at `level` on one baseline, `tracking` pixels apart.

  Returns:
    (placed, shape, baseline): the glyphs in mask coordinates, the mask's (H, W), and the
    baseline's y in the mask.
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
  shifted = [(b, x - x0 + _PAD, y - y0 + _PAD, e) for b, x, y, e in placed]
  return shifted, (y1 - y0 + 2 * _PAD, x1 - x0 + 2 * _PAD), float(_PAD - y0)


def measure(
    text: str, face: fonts.FontFace, weight: int, geometry: Geometry, height: int
) -> Layout:
  """Measures `text` in `face` at `weight` under `geometry`, for an output `height` tall.

  Args:
    text: a non-empty string the font can draw.
    face: the font file.
    weight: its CSS weight.
    geometry: stretch, shear, rotation, perspective, curve, tracking and crop margins.
    height: the output height in pixels.

  Returns:
    The `Layout`: glyph size, level and places in the glyph mask, the Pillow transform
    from the output back into the mask, the output size and the ink's height in output
    pixels.
  """
  g = geometry
  top, bottom, left, right = g.margins
  # Font size: the crop height in em, estimated, sets the size that maps ~1:1.
  ascends = any(c.isupper() or c.isdigit() or c in "bdfhiklt" for c in text)
  descends = any(c in "gjpqyQJ" for c in text)
  ink_em = 0.95 if g.line_box else (0.72 if ascends else 0.5) + (0.22 if descends else 0.0)
  width_em = 0.55 * len(text) * g.stretch
  crop_em = (ink_em * abs(math.cos(g.angle)) + width_em * abs(math.sin(g.angle))) * (
      1.0 + top + bottom
  ) + abs(g.curve) * ink_em
  em = round(_GLYPH_EM * height)
  level = min(max(round(math.log2(em * crop_em / height)), 0), _MAX_LEVEL)
  glyphs = _font_glyphs(face, weight, em)
  tracking_px = g.tracking * em / 2**level
  placed, mask_shape, baseline = _place(text, glyphs, level, tracking_px)
  points = np.concatenate([e + (x, y) for _, x, y, e in placed]).astype(np.float64)
  ascent, descent = glyphs.ascent / 2.0**level, glyphs.descent / 2.0**level

  # Forward map from mask pixels to the (uncropped) output plane.
  cx, cy = points.mean(axis=0)
  half_w = max(1.0, 0.5 * (points[:, 0].max() - points[:, 0].min()))
  half_h = max(1.0, 0.5 * (points[:, 1].max() - points[:, 1].min()))
  c, s = math.cos(g.angle), math.sin(g.angle)
  wide = half_w * g.stretch
  persp = g.perspective
  forward = (
      np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [persp[0] / wide, persp[1] / wide, 1.0]])
      @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
      @ np.array([[g.stretch, -g.shear, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
      @ _translate(-cx, -cy)
  )
  plane = _apply(forward, points)
  curve_px = g.curve * 2.0 * half_h  # baseline offset at the word's ends
  curve_half = max(1.0, 0.5 * (plane[:, 0].max() - plane[:, 0].min()))
  if curve_px:
    plane[:, 1] += curve_px * (plane[:, 0] / curve_half) ** 2
  x0, x1 = plane[:, 0].min(), plane[:, 0].max()
  y0, y1 = plane[:, 1].min(), plane[:, 1].max()
  ink_height = max(1.0, y1 - y0)
  if g.line_box:
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
  size = (width, height)
  if curve_px:
    warp, data = "mesh", _mesh(size, to_output, forward, curve_px, curve_half)
  else:
    inverse = np.linalg.inv(to_output @ forward)
    inverse /= inverse[2, 2]
    if persp[0] or persp[1]:
      warp, data = "perspective", tuple(inverse.flat[:8].tolist())
    else:
      warp, data = "affine", tuple(inverse.flat[:6].tolist())
  return Layout(
      em=em,
      level=level,
      origins=tuple((x, y) for _, x, y, _ in placed),
      mask_shape=mask_shape,
      warp=warp,
      warp_data=data,
      size=size,
      text_px=float(ink_height * scale),
  )


def _mesh(
    size: tuple[int, int],
    to_output: np.ndarray,
    forward: np.ndarray,
    curve_px: float,
    curve_half: float,
) -> tuple:
  """Pillow MESH data for: the `forward` homography, then y += curve_px * (x /
  curve_half) ** 2, then `to_output`: vertical strips, each mapped bilinearly from the
  exact inverse at its four corners.
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
    (ul, ll), (ur, lr) = source[i].tolist(), source[i + 1].tolist()
    mesh.append((box, (*ul, *ll, *lr, *ur)))
  return tuple(mesh)


_TRANSFORMS = {
    "affine": Image.Transform.AFFINE,
    "perspective": Image.Transform.PERSPECTIVE,
    "mesh": Image.Transform.MESH,
}


def text_mask(text: str, face: fonts.FontFace, weight: int, layout: Layout) -> Image.Image:
  """The text's coverage in the output: an 'L' image of `layout.size`, 255 on the ink.

  Args:
    text: the string `layout` was measured for.
    face: the font file.
    weight: its CSS weight.
    layout: from `measure(text, face, weight, ...)`.
  """
  glyphs = _font_glyphs(face, weight, layout.em)
  mask = np.zeros(layout.mask_shape, dtype=np.uint8)
  for char, (x, y) in zip(text, layout.origins):
    bitmap = glyphs.get(char, layout.level)[0]
    region = mask[y : y + bitmap.shape[0], x : x + bitmap.shape[1]]
    np.maximum(region, bitmap, out=region)  # overlapping glyphs: the brighter wins
  return Image.fromarray(mask).transform(
      layout.size, _TRANSFORMS[layout.warp], layout.warp_data, Image.Resampling.BILINEAR
  )

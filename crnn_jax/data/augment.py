"""Training augmentation of word crops: camera-like geometry and degradations, any source.

`augment(image, rng, strength)` takes one grayscale word crop already at the model height
and returns a changed copy at the same height, for real photo crops and rendered words
alike (the renderer's own degradations only ever reach synthetic words). The caller seeds
`rng` per example, so an augmented image is a pure function of its seed; `strength` in
[0, 1] scales every probability and magnitude, 0 is off. At strength 1, per image:

| op | probability | magnitude |
| --- | --- | --- |
| rotation | 0.5 | up to 4 degrees, less for long words (their ends rise at most 25% of H) |
| shear | 0.3 | x += k * y, abs(k) <= 0.3 |
| perspective | 0.3 | up to +-20% size change end to end, slight keystone |
| curve | 0.1 | parabolic baseline, ends up to 20% of H off the middle |
| crop jitter | 0.6 | each side: cut up to 3% of W (6% of H) or add up to 8% of W (15% of H) |
| contrast, brightness | 0.5 | contrast x0.45-1.3 (never below a 60-level ink/background spread), brightness +-40 (ink or background at most half-way to black/white) |
| inversion | 0.2 | light on dark <-> dark on light |
| uneven lighting | 0.2 | a bilinear field from four corners in [0.7, 1] multiplies the image |
| low resolution / blur | 0.15 / 0.15 | down-up by 1.3-2 (text keeps 16 px) / radius 0.3-0.9 px |
| Gaussian noise | 0.4 | sigma 2-10, at most 0.15 x the ink/background spread |
| JPEG | 0.3 | quality 35-85 |

All geometry is one Pillow transform from the input to the output, so an image is
resampled once however many geometric ops fire. Exposed corners and added margins take the
image's border colour. Magnitudes are kept below what a person would find hard to read,
and crops never cut more than a few percent off a side, so the label still holds.
"""

from __future__ import annotations

import io
import math
import numbers

import numpy as np
from PIL import Image, ImageFilter

from crnn_jax.data.preprocess import MIN_WIDTH

# Each op reads its own row of uniform draws, so changing one op's probability or
# magnitude leaves the draws, and so the output, of every other op as it was.
_OPS = (
    "rotate",
    "shear",
    "perspective",
    "curve",
    "crop",
    "tone",
    "invert",
    "lighting",
    "soften",
    "noise",
    "jpeg",
)
_DRAWS_PER_OP = 5

# A long word's ends rise by width * sin(angle); beyond this fraction of the height the
# resize back to H shrinks the letters more than the rotation is worth.
_MAX_RISE = 0.25
# Widest output, as a multiple of the input width plus a constant (the interface's bound).
_MAX_GROWTH = 1.3
_MAX_EXTRA = 8
# Contrast is measured as the spread between the 5th and 95th percentile grey levels, which
# in a word crop are ink and background. Lowering contrast stops at this spread (crops that
# start lower keep theirs): below it text gets hard to read even for a person.
_MIN_SPREAD = 60.0
# Noise sigma is at most this fraction of the spread, so faint text is not drowned.
_NOISE_PER_SPREAD = 0.15
# Low-resolution resampling and blur keep text this many effective pixels tall.
_MIN_SOFT_HEIGHT = 16.0
# Where a curved edge is sampled to find its extent, as fractions of its length.
_EDGE_STEPS = np.linspace(0.0, 1.0, 17)


def _check_inputs(image, strength) -> None:
  if (
      isinstance(strength, bool)
      or not isinstance(strength, numbers.Real)
      or not (0.0 <= strength <= 1.0)
  ):
    raise ValueError(f"strength must be a number in [0, 1]; got {strength!r}.")
  if not isinstance(image, np.ndarray):
    raise ValueError(
        f"image must be a 2-D (H, W) uint8 grayscale numpy array; got {type(image).__name__}."
    )
  if image.ndim != 2 or image.dtype != np.uint8 or image.size == 0:
    raise ValueError(
        f"image must be a non-empty 2-D (H, W) uint8 grayscale array; got shape "
        f"{image.shape} dtype {image.dtype}."
    )


def border_value(image: np.ndarray) -> int:
  """Median of the outermost rows and columns: the background colour of a word crop.

  Args:
    image: (H, W) uint8 array.

  Returns:
    An int in [0, 255].
  """
  edges = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
  return int(np.median(edges))


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
  """points: (N, 2) -> (N, 2) through the 3x3 homography `matrix` (column vectors)."""
  p = points @ matrix[:, :2].T + matrix[:, 2]
  return p[:, :2] / p[:, 2:3]


def _outline(width: int, height: int, curved: bool) -> np.ndarray:
  """(N, 2) points on the image outline, in pixel-corner coordinates.

  A homography maps edges to straight lines, so the four corners bound the result; a
  curved edge bulges between them, so then points along each edge are needed too.
  """
  if not curved:
    return np.array([[0.0, 0.0], [width, 0.0], [0.0, height], [width, height]])
  t = _EDGE_STEPS
  zeros, ones = np.zeros_like(t), np.ones_like(t)
  xs, ys = t * width, t * height
  return np.concatenate(
      [
          np.stack([xs, zeros], 1),
          np.stack([xs, ones * height], 1),
          np.stack([zeros, ys], 1),
          np.stack([ones * width, ys], 1),
      ]
  )


def warp(
    image: np.ndarray,
    *,
    angle: float = 0.0,
    shear: float = 0.0,
    perspective: tuple[float, float] = (0.0, 0.0),
    curve: float = 0.0,
    margins: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
    fill: int = 255,
    max_width: int | None = None,
) -> np.ndarray:
  """Rotates, shears, tilts and bends a word crop, re-crops it and scales it back to H.

  The whole input stays in view (the output box starts as the bounding box of the
  transformed image), then `margins` move each side of that box; the result is scaled to
  the input height keeping the aspect ratio, in one resampling.

  Args:
    image: (H, W) uint8 array.
    angle: rotation in radians, positive turns the word clockwise on screen.
    shear: horizontal shear, x += shear * y (y down from the centre), so positive leans
      the letters left.
    perspective: (end to end, top to bottom) perspective coefficients; 0.1 end to end makes
      one end of the word about 20% larger than the other.
    curve: the word's ends move this fraction of H down (negative: up) from its middle,
      along a parabola.
    margins: (left, top, right, bottom) fractions of the transformed box's width (left,
      right) or height (top, bottom) added to that side; negative cuts.
    fill: grey level of exposed corners and added margins.
    max_width: widest output; a wider result is squeezed horizontally.

  Returns:
    (H, W2) uint8 array, MIN_WIDTH <= W2 (<= max_width when given).
  """
  height, width = image.shape
  cx, cy = width / 2.0, height / 2.0
  half_w = max(1.0, cx)
  c, s = math.cos(angle), math.sin(angle)
  # Input pixel-corner coordinates -> a plane centred on the word.
  forward = (
      np.array(
          [
              [1.0, 0.0, 0.0],
              [0.0, 1.0, 0.0],
              [perspective[0] / half_w, perspective[1] / half_w, 1.0],
          ]
      )
      @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
      @ np.array([[1.0, shear, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
      @ np.array([[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, 1.0]])
  )
  curve_px = curve * height
  outline = _apply(forward, _outline(width, height, bool(curve_px)))
  curve_half = max(1.0, 0.5 * (outline[:, 0].max() - outline[:, 0].min()))
  if curve_px:
    outline[:, 1] += curve_px * (outline[:, 0] / curve_half) ** 2
  x0, y0 = outline.min(axis=0).tolist()
  x1, y1 = outline.max(axis=0).tolist()
  box_w, box_h = x1 - x0, y1 - y0
  left, top, right, bottom = margins
  x0, x1 = x0 - left * box_w, x1 + right * box_w
  y0, y1 = y0 - top * box_h, y1 + bottom * box_h

  out_w = max(MIN_WIDTH, round((x1 - x0) * height / (y1 - y0)))
  if max_width is not None:
    out_w = min(out_w, max(MIN_WIDTH, max_width))
  sx, sy = out_w / (x1 - x0), height / (y1 - y0)
  to_output = np.array([[sx, 0.0, -x0 * sx], [0.0, sy, -y0 * sy], [0.0, 0.0, 1.0]])

  src = Image.fromarray(image, "L")
  size = (out_w, height)
  if curve_px:
    out = src.transform(
        size,
        Image.Transform.MESH,
        _curve_mesh(size, to_output, forward, curve_px, curve_half),
        Image.Resampling.BILINEAR,
        fillcolor=fill,
    )
  else:
    inverse = np.linalg.inv(to_output @ forward)
    inverse /= inverse[2, 2]
    if perspective[0] or perspective[1]:
      out = src.transform(
          size,
          Image.Transform.PERSPECTIVE,
          tuple(inverse.flat[:8]),
          Image.Resampling.BILINEAR,
          fillcolor=fill,
      )
    else:
      out = src.transform(
          size,
          Image.Transform.AFFINE,
          tuple(inverse.flat[:6]),
          Image.Resampling.BILINEAR,
          fillcolor=fill,
      )
  return np.asarray(out, np.uint8)


def _curve_mesh(
    size: tuple[int, int],
    to_output: np.ndarray,
    forward: np.ndarray,
    curve_px: float,
    curve_half: float,
) -> list:
  """Pillow MESH data for `forward`, then y += curve_px * (x / curve_half) ** 2.

  Vertical strips of the output, each mapped bilinearly from the exact inverse at its four
  corners. Strips about 16 px wide follow the parabola to within 0.2 px for a 100 px word
  at the strongest curve; each strip is a Pillow call, so fewer is faster.
  """
  width, height = size
  strips = max(4, min(24, width // 16))
  xs = np.unique(np.linspace(0.0, width, strips + 1).round())
  corners = np.array([[x, y] for x in xs for y in (0.0, float(height))])
  plane = _apply(np.linalg.inv(to_output), corners)
  plane[:, 1] -= curve_px * (plane[:, 0] / curve_half) ** 2
  source = _apply(np.linalg.inv(forward), plane).reshape(len(xs), 2, 2)
  mesh = []
  for i in range(len(xs) - 1):
    (ul, ll), (ur, lr) = source[i], source[i + 1]
    mesh.append(((int(xs[i]), 0, int(xs[i + 1]), height), (*ul, *ll, *lr, *ur)))
  return mesh


def _levels(image: np.ndarray) -> tuple[float, float, float]:
  """(mean, 5th percentile, 95th percentile) grey level, all from one histogram."""
  hist = np.bincount(image.ravel(), minlength=256)
  cdf = np.cumsum(hist)
  low, high = np.searchsorted(cdf, (0.05 * cdf[-1], 0.95 * cdf[-1])).tolist()
  return float(hist @ np.arange(256)) / float(cdf[-1]), float(low), float(high)


def tone_table(mean: float, contrast: float, brightness: float, invert: bool) -> np.ndarray:
  """A 256-entry uint8 lookup table: contrast about `mean`, then brightness, then inversion.

  One table lookup applies all three, far cheaper than float arithmetic on the image.
  """
  levels = (np.arange(256, dtype=np.float32) - mean) * contrast + mean + brightness
  if invert:
    levels = 255.0 - levels
  return np.clip(levels, 0.0, 255.0).round().astype(np.uint8)


def _lighting(image: np.ndarray, corners) -> np.ndarray:
  """Multiplies by a bilinear field through four corner gains (tl, tr, bl, br): a lamp."""
  height, width = image.shape
  tl, tr, bl, br = corners
  fx = np.linspace(0.0, 1.0, width, dtype=np.float32)
  fy = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
  top = tl + (tr - tl) * fx
  bottom = bl + (br - bl) * fx
  return image * (top + (bottom - top) * fy)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
  buffer = io.BytesIO()
  Image.fromarray(image, "L").save(buffer, "JPEG", quality=quality)
  buffer.seek(0)
  with Image.open(buffer) as im:
    return np.asarray(im.convert("L"), np.uint8)


def augment(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
  """A randomly augmented copy of a grayscale word crop (see the module docstring's table).

  Args:
    image: (H, W) uint8 grayscale array, already at the model height (usually 32).
    rng: the example's generator, e.g. ``np.random.default_rng([seed, step, process,
      slot])``; the output depends only on `image`, `strength` and its state.
    strength: in [0, 1]; scales every probability and magnitude. 0 returns a copy of
      `image` without drawing from `rng`.

  Returns:
    (H, W2) uint8 array, MIN_WIDTH <= W2 <= 1.3 * W + 8.

  Raises:
    ValueError: if `strength` is outside [0, 1] or `image` is not a 2-D uint8 array.
  """
  _check_inputs(image, strength)
  if strength == 0:
    return image.copy()
  st = float(strength)
  height, width = image.shape
  draws = dict(zip(_OPS, rng.random((len(_OPS), _DRAWS_PER_OP)).tolist()))

  def fires(op: str, probability: float) -> bool:
    return draws[op][0] < probability * st

  def sym(op: str, i: int, magnitude: float) -> float:
    """Uniform in [-magnitude, magnitude] * strength from draw i of op."""
    return (2.0 * draws[op][i] - 1.0) * magnitude * st

  # Geometry.
  angle = shear = curve = 0.0
  perspective = (0.0, 0.0)
  margins = (0.0, 0.0, 0.0, 0.0)
  if fires("rotate", 0.5):
    limit = min(math.radians(4.0), math.asin(min(1.0, _MAX_RISE * height / width)))
    angle = sym("rotate", 1, limit)
  if fires("shear", 0.3):
    shear = sym("shear", 1, 0.3)
  if fires("perspective", 0.3):
    perspective = (sym("perspective", 1, 0.1), sym("perspective", 2, 0.15))
  if fires("curve", 0.1):
    curve = sym("curve", 1, 0.2)
  if fires("crop", 0.6):
    # Negative cuts. Cuts stay small, so a tight crop loses at most a sliver of a letter.
    d = draws["crop"]
    margins = tuple(
        st * (lo + (hi - lo) * u)
        for u, (lo, hi) in zip(d[1:], ((-0.03, 0.08), (-0.06, 0.15), (-0.03, 0.08), (-0.06, 0.15)))
    )
  fill = border_value(image)
  out = image
  if angle or shear or curve or any(perspective) or any(margins):
    out = warp(
        image,
        angle=angle,
        shear=shear,
        perspective=perspective,
        curve=curve,
        margins=margins,
        fill=fill,
        max_width=int(_MAX_GROWTH * width + _MAX_EXTRA),
    )
  elif width < MIN_WIDTH:
    out = warp(image, fill=fill)  # only widens to MIN_WIDTH

  # Photometric: tone (one table), then lighting, softening, noise and JPEG, in the order a
  # camera would apply them.
  mean, low, high = _levels(out)
  contrast, brightness = 1.0, 0.0
  if fires("tone", 0.5):
    contrast = 1.0 + st * (-0.55 + 0.85 * draws["tone"][1])
    if contrast < 1.0:
      contrast = max(contrast, min(1.0, _MIN_SPREAD / max(high - low, 1.0)))
    # The shift moves the ink or the background at most half-way to black or white:
    # clipped levels merge, and text on a dark crop made darker is lost to the eye.
    ink_or_bg = (mean + (low - mean) * contrast, mean + (high - mean) * contrast)
    brightness = min(
        max(sym("tone", 2, 40.0), -0.5 * max(ink_or_bg[0], 0.0)),
        0.5 * max(255.0 - ink_or_bg[1], 0.0),
    )
  invert = fires("invert", 0.2)
  if contrast != 1.0 or brightness or invert:
    out = tone_table(mean, contrast, brightness, invert)[out]
  spread = (high - low) * contrast

  if fires("lighting", 0.2):
    gains = [1.0 - 0.3 * st * u for u in draws["lighting"][1:5]]
    out = np.clip(_lighting(out.astype(np.float32), gains), 0.0, 255.0).astype(np.uint8)

  soften = draws["soften"]
  cap = height / _MIN_SOFT_HEIGHT
  if soften[0] < 0.15 * st:
    factor = min(1.3 + 0.7 * st * soften[1], cap)
    if factor > 1.1:
      small = (max(1, round(out.shape[1] / factor)), max(1, round(height / factor)))
      img = Image.fromarray(out, "L").resize(small, Image.Resampling.BILINEAR)
      out = np.asarray(img.resize((out.shape[1], height), Image.Resampling.BILINEAR))
  elif soften[0] < 0.3 * st:
    radius = (0.3 + 0.6 * st * soften[1]) * min(1.0, cap / 2.0)
    out = np.asarray(Image.fromarray(out, "L").filter(ImageFilter.GaussianBlur(radius)))

  if fires("noise", 0.4):
    sigma = min(2.0 + 8.0 * st * draws["noise"][1], max(1.0, _NOISE_PER_SPREAD * spread))
    noise = rng.standard_normal(out.shape, dtype=np.float32)
    out = np.clip(out + sigma * noise, 0.0, 255.0).astype(np.uint8)

  if fires("jpeg", 0.3):
    quality = round(85.0 - 50.0 * st * draws["jpeg"][1])
    out = _jpeg(out, quality)
  return np.ascontiguousarray(out, np.uint8)

"""Tests for crnn_jax.data.augment."""

import numpy as np
import pytest

from crnn_jax.data import augment, preprocess


def _bars(width=120, height=32, n=5, bar=6, margin=6, ink=0, background=255):
  """n dark vertical bars ("letters") on a light background; the outer ones `margin` px in."""
  image = np.full((height, width), background, np.uint8)
  for x in np.linspace(margin, width - margin - bar, n).round().astype(int):
    image[6:26, x : x + bar] = ink
  return image


def _ink_columns(image):
  """(W,) bool: columns whose mean distance from the background level is over half the most.

  Distance from the border colour, not darkness, so inverted images (light ink) work too.
  """
  dist = np.abs(image.astype(np.float32) - augment.border_value(image)).mean(axis=0)
  return dist > 0.5 * dist.max()


def _runs(mask):
  """Widths of the runs of True in a 1-D bool mask, left to right."""
  edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
  return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def _ink_share(mask):
  """Fraction of the width from the first to the last ink column."""
  cols = np.flatnonzero(mask)
  return (cols[-1] + 1 - cols[0]) / mask.size


def _label_kept(image, original, min_share):
  """Whether every bar of `original` is still whole in `image` (see the test below)."""
  runs = _runs(_ink_columns(image))
  if len(runs) != len(_runs(_ink_columns(original))):
    return False
  # Perspective narrows bars gradually; a crop makes the outer bar much narrower than its
  # neighbour.
  if runs[0] <= 0.5 * runs[1] or runs[-1] <= 0.5 * runs[-2]:
    return False
  return _ink_share(_ink_columns(image)) >= min_share * _ink_share(_ink_columns(original))


def _bit_state(rng):
  return rng.bit_generator.state["state"]["state"]


def test_same_seed_same_output_different_seeds_differ():
  image = _bars()
  outs = [augment.augment(image, np.random.default_rng([7, i]), 1.0) for i in range(20)]
  again = [augment.augment(image, np.random.default_rng([7, i]), 1.0) for i in range(20)]
  for a, b in zip(outs, again):
    np.testing.assert_array_equal(a, b)
  distinct = {(o.shape, o.tobytes()) for o in outs}
  assert len(distinct) >= 18


def test_strength_zero_returns_the_input_and_draws_nothing():
  image = np.random.default_rng(0).integers(0, 256, (32, 77)).astype(np.uint8)
  rng = np.random.default_rng(3)
  before = _bit_state(rng)
  out = augment.augment(image, rng, 0.0)
  np.testing.assert_array_equal(out, image)
  assert out.dtype == np.uint8
  assert _bit_state(rng) == before


def test_strength_scales_the_change():
  image = _bars()

  def mean_change(strength):
    total = 0.0
    for i in range(100):
      out = augment.augment(image, np.random.default_rng([1, i]), strength)
      if out.shape == image.shape:
        total += np.abs(out.astype(float) - image).mean()
      else:
        total += 255.0 / 2  # changed geometry: counts as a large change
    return total / 100

  weak, strong = mean_change(0.1), mean_change(1.0)
  assert 0 < weak < 0.5 * strong


ODD_IMAGES = {
    "bars": _bars(),
    "narrowest": np.full((32, preprocess.MIN_WIDTH), 200, np.uint8),
    "very_wide": np.tile(_bars(width=100), (1, 6)),  # 32 x 600
    "all_white": np.full((32, 100), 255, np.uint8),
    "all_black": np.zeros((32, 100), np.uint8),
    "noise": np.random.default_rng(5).integers(0, 256, (32, 90)).astype(np.uint8),
    "taller": _bars(height=48, width=70),
}


@pytest.mark.parametrize("name", sorted(ODD_IMAGES))
@pytest.mark.parametrize("strength", [0.3, 1.0])
def test_shape_dtype_and_width_bounds(name, strength):
  image = ODD_IMAGES[name]
  height, width = image.shape
  widths = set()
  for i in range(150):
    out = augment.augment(image, np.random.default_rng([2, i]), strength)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 2
    assert out.shape[0] == height
    assert preprocess.MIN_WIDTH <= out.shape[1] <= 1.3 * width + 8
    widths.add(out.shape[1])
  if width > preprocess.MIN_WIDTH:
    assert len(widths) > 3  # geometry does change the width


def test_exposed_corners_take_the_border_colour():
  # A rotated, sheared white crop: black corners would be a fill of 0.
  image = np.full((32, 100), 255, np.uint8)
  image[10:20, 20:80] = 0
  out = augment.warp(
      image,
      angle=0.07,
      shear=0.3,
      perspective=(0.1, 0.1),
      curve=0.2,
      margins=(0.08, 0.15, 0.08, 0.15),
      fill=augment.border_value(image),
  )
  assert out.shape[0] == 32
  for corner in (out[:3, :3], out[:3, -3:], out[-3:, :3], out[-3:, -3:]):
    assert corner.min() > 250


def test_warp_squeezes_to_max_width_and_keeps_height():
  image = _bars(width=60)
  out = augment.warp(image, shear=0.3, margins=(0.08, 0.0, 0.08, 0.0), fill=255)
  assert out.shape[1] > 70
  squeezed = augment.warp(image, shear=0.3, margins=(0.08, 0.0, 0.08, 0.0), fill=255, max_width=62)
  assert squeezed.shape == (32, 62)
  assert len(_runs(_ink_columns(squeezed))) == 5


def test_text_keeps_its_contrast():
  """Black bars on white keep at least 80 grey levels between ink and background.

  Measured as the 95th minus the 5th percentile level (background minus ink); at strength 1
  it stays above ~95. Breaking looks like contrast cuts, lighting, blur or noise strong
  enough together to wash the ink into the background.
  """
  image = _bars()
  spreads = []
  for i in range(300):
    out = augment.augment(image, np.random.default_rng([6, i]), 1.0)
    low, high = np.percentile(out, [5, 95])
    spreads.append(high - low)
  assert min(spreads) >= 80


def test_label_checker_catches_crops_and_shrinking():
  image = _bars()
  assert _label_kept(image, image, 0.85)
  assert not _label_kept(image[:, 9:], image, 0.85)  # half the first bar cut off
  assert not _label_kept(image[:, 13:], image, 0.85)  # the first bar gone
  assert not _label_kept(np.pad(image, ((0, 0), (30, 30)), constant_values=255), image, 0.85)


@pytest.mark.parametrize("strength,min_share", [(0.5, 0.85), (1.0, 0.75)])
@pytest.mark.parametrize("invert", [False, True])
def test_label_is_kept(strength, min_share, invert):
  """The bars (letters) all stay whole and in view.

  Five 6-px bars on a 32x120 crop, the outer ones 6 px (5%) from the edges. Breaking looks
  like: an outer bar missing or cut to half its neighbour's width or less (a crop cut into
  the word), bars merged or split (blur or warp too strong), or the ink spanning less than
  `min_share` of its former share of the width (the word shrunk into added margin).
  Inversion is accounted for by measuring ink as distance from the border colour, and the
  crop is tested both ways round.
  """
  image = _bars()
  if invert:
    image = 255 - image
  failed = [
      i
      for i in range(250)
      if not _label_kept(
          augment.augment(image, np.random.default_rng([4, i]), strength), image, min_share
      )
  ]
  assert not failed, f"seeds {failed[:10]} lost part of the word"


@pytest.mark.parametrize("strength", [-0.1, 1.5, float("nan"), "1", None, True])
def test_bad_strength_raises(strength):
  with pytest.raises(ValueError) as info:
    augment.augment(_bars(), np.random.default_rng(0), strength)
  assert "strength" in str(info.value) and repr(strength) in str(info.value)


@pytest.mark.parametrize(
    "image,shown",
    [
        (np.zeros((32, 100, 3), np.uint8), "(32, 100, 3)"),
        (np.zeros((32, 100), np.float32), "float32"),
        (np.zeros((0, 100), np.uint8), "(0, 100)"),
        (np.zeros(100, np.uint8), "(100,)"),
        ([[0, 255]], "list"),
    ],
)
def test_bad_image_raises(image, shown):
  with pytest.raises(ValueError) as info:
    augment.augment(image, np.random.default_rng(0), 0.5)
  message = str(info.value)
  # Names the argument, what came and what is expected.
  assert message.startswith("image") and shown in message and "(H, W) uint8" in message

"""What decides one synthetic word image: `RenderParams` and the parts it is made of.

`render_sample` fills these from a seeded generator (every random draw of an image happens
there); `render_layout` and `render_draw` turn them into pixels without drawing anything
at random. So an image is a pure function of its `RenderParams` (plus the installed fonts
and the photos shipped with scikit-image), and two equal parameter sets draw equal images.

Colours are RGB tuples of ints in 0-255; luminances are ITU-R 601 on the same scale.
Lengths are in output pixels unless a field says otherwise.
"""

from __future__ import annotations

import dataclasses

from crnn_jax.data import fonts

RGB = tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class Geometry:
  """How the word is laid out and warped, in units independent of the font size.

  Attributes:
    stretch: horizontal scale of the letters (1: the font's own proportions).
    shear: horizontal shear, x -= shear * y (0: upright).
    angle: rotation in radians, positive clockwise on screen.
    perspective: (end-to-end size change, slant of the letters at the word's ends); (0, 0)
      for none.
    curve: baseline bend: the word's ends move down by curve times the ink height (up when
      negative; 0: a straight baseline).
    tracking: extra space after every character, in em.
    line_box: crop around the font's ascender/descender lines, else around the ink.
    margins: (top, bottom, left, right) space around the crop box, as fractions of its
      height; negative cuts into the ink.
  """

  stretch: float
  shear: float
  angle: float
  perspective: tuple[float, float]
  curve: float
  tracking: float
  line_box: bool
  margins: tuple[float, float, float, float]


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where the ink goes: measured from the text, font and `Geometry` (no random draw).

  Part of the parameters because later draws depend on it: how much noise an image takes
  from the noise table, and the crop of a photo background, follow the output width.

  Attributes:
    em: the font size the glyphs are rendered at, in pixels (before box filtering).
    level: glyphs are box-filtered by 2 ** level from `em`.
    origins: the top-left corner (x, y) of each character's glyph bitmap in the mask.
    mask_shape: the glyph mask's (height, width).
    warp: how the mask is resampled to the output: 'affine', 'perspective' or 'mesh' (a
      curved baseline, as vertical strips).
    warp_data: Pillow's data for that transform, mapping output pixels back into the mask:
      the first 6 or 8 coefficients of the inverse homography, or the mesh's
      ((left, top, right, bottom), (8 quad corner coordinates)) per strip.
    size: the output image's (width, height).
    text_px: the ink's height in output pixels.
  """

  em: int
  level: int
  origins: tuple[tuple[int, int], ...]
  mask_shape: tuple[int, int]
  warp: str
  warp_data: tuple
  size: tuple[int, int]
  text_px: float


@dataclasses.dataclass(frozen=True)
class Flat:
  """A background of one colour."""

  colour: RGB


@dataclasses.dataclass(frozen=True)
class Gradient:
  """A bilinear blend of four corner colours: top-left, top-right, bottom-left, bottom-right."""

  corners: tuple[RGB, RGB, RGB, RGB]


@dataclasses.dataclass(frozen=True)
class Texture:
  """Blotches: smooth noise on a (width, height) grid of `cells`, upsampled bicubically and
  mapped from `dark` to `light`.

  Attributes:
    dark: the colour of the noise's low values.
    light: the colour of its high values.
    cells: the noise grid's (width, height).
    noise_offset: where the grid's values start in the noise table; None when the grid is
      larger than the table, which is then tiled.
  """

  dark: RGB
  light: RGB
  cells: tuple[int, int]
  noise_offset: int | None


@dataclasses.dataclass(frozen=True)
class Photo:
  """A crop of a scikit-image photo, blended toward a flat colour to stay readable.

  Attributes:
    photo: index into the shipped photos (`render_draw.photos()`).
    box: the crop (left, top, right, bottom) in the photo's pixels, resized to the output.
    mirror: whether the crop is flipped left-right.
    lum: the background's target mean luminance.
    spread: how far (about two standard deviations) its pixels may stray from `lum`.
    saturation: of the flat colour blended in.
    max_alpha: the most weight the photo gets in the blend; the crop's own statistics may
      lower it.
    flat_hue: the flat colour's hue in [0, 1); None when the photo is used unblended.
  """

  photo: int
  box: tuple[float, float, float, float]
  mirror: bool
  lum: float
  spread: float
  saturation: float
  max_alpha: float
  flat_hue: float | None


Background = Flat | Gradient | Texture | Photo


@dataclasses.dataclass(frozen=True)
class Shadow:
  """A blurred copy of the text under it.

  Attributes:
    offset: (x, y) shift of the copy in pixels.
    blur: Gaussian blur radius in pixels.
    colour: the shadow's colour.
  """

  offset: tuple[int, int]
  blur: float
  colour: RGB


@dataclasses.dataclass(frozen=True)
class Extrusion:
  """3-D lettering: the glyphs stacked along a direction, in a darker or lighter shade.

  Attributes:
    depth: how far the stack reaches, in pixels.
    angle: its direction in radians (0: to the right, pi / 2: down).
    colour: the sides' colour.
  """

  depth: float
  angle: float
  colour: RGB


@dataclasses.dataclass(frozen=True)
class Paint:
  """The colours of the image: background, text and its decorations, drawn in that order.

  Attributes:
    background: what is behind the text.
    shadow: a drop shadow, or None.
    extrusion: 3-D lettering (the `extrude` look), or None.
    outline: the colour of a 1-2 pixel outline around the glyphs, or None.
    fill: the text's colour, or two colours for a vertical two-tone gradient (top, bottom).
  """

  background: Background
  shadow: Shadow | None
  extrusion: Extrusion | None
  outline: RGB | None
  fill: tuple[RGB] | tuple[RGB, RGB]


@dataclasses.dataclass(frozen=True)
class Degrade:
  """Camera-like degradations, applied in the order of the fields.

  Attributes:
    downscale: low resolution: shrink by this factor and enlarge back, or None.
    blur: out of focus: a Gaussian blur radius, or None.
    lighting: uneven lighting: gains (0-255, 255 = unchanged) at the four corners,
      interpolated bilinearly, or None.
    noise: (sigma, noise_offset) for Gaussian noise of that standard deviation (0-255
      scale), taken from the noise table at the offset (None: the image is larger than the
      table, which is tiled); or None.
    jpeg_quality: JPEG compression at that quality, or None.
    soft_downscale: the `soft` look's low resolution (enlarged back bicubically), or None.
    soft_blur: the `soft` look's blur radius, applied last; None without the look.
  """

  downscale: float | None
  blur: float | None
  lighting: tuple[int, int, int, int] | None
  noise: tuple[float, int | None] | None
  jpeg_quality: int | None
  soft_downscale: float | None
  soft_blur: float | None


@dataclasses.dataclass(frozen=True)
class RenderParams:
  """Everything that decides one image; `Renderer.sample(index)` makes it.

  Attributes:
    text: the string shown.
    face: the font file.
    weight: its CSS weight (set through the `wght` axis for a variable font).
    geometry: the layout and warp, sampled.
    layout: the geometry measured on the glyphs (derived, not sampled).
    paint: the colours.
    degrade: the degradations.
  """

  text: str
  face: fonts.FontFace
  weight: int
  geometry: Geometry
  layout: Layout
  paint: Paint
  degrade: Degrade

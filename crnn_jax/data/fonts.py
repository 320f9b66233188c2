"""Fonts for the synthetic renderer: where font files come from, which of them can draw every
character of a charset, and cached Pillow font objects at a given weight and pixel size.

Three sources, in order of preference (a family found in an earlier source hides the same
family name in a later one): the `fontpkg-*` packages listed in pyproject.toml (one OFL
family each, static or variable files), the system font folders, and the DejaVu files that
ship inside matplotlib when it is installed. Nothing here imports matplotlib or scans more
than file names until a charset is checked.

A file is usable for a charset when every non-space character has a real glyph: with the
basic layout engine a missing character is drawn as glyph 0 (`.notdef`, often a box) or
as nothing, so a character whose bitmap is empty or equal to the `.notdef` bitmap is
missing. A font whose lowercase letters are drawn like its capitals (all-caps and small-caps
fonts) is rejected for a charset that has both cases: its images would contradict their
labels.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import pathlib
import re
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Where font files are looked for, in order of preference.
SOURCES = ("fontpkg", "system", "matplotlib")

SYSTEM_FONT_DIRS = (
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "~/.local/share/fonts",
    "~/.fonts",
)

# Weights drawn from a variable font's `wght` axis (clipped to the axis range).
VARIABLE_WEIGHTS = (300, 400, 700, 900)

# Families whose letters are pictures, symbols or formulas, not text.
_NON_TEXT_FAMILY = re.compile(
    r"symbol|dingbat|emoji|wingding|webding|math|^cm[a-z]+\d|icon|awesome|braille|music|ornament",
    re.IGNORECASE,
)

# A code point that no text font maps; drawing it shows the font's `.notdef` glyph.
_NOTDEF_PROBE = "\U0010fffd"

_STYLE_WEIGHTS = (
    ("thin", 100),
    ("hairline", 100),
    ("extralight", 200),
    ("ultralight", 200),
    ("light", 300),
    ("medium", 500),
    ("semibold", 600),
    ("demibold", 600),
    ("extrabold", 800),
    ("ultrabold", 800),
    ("bold", 700),
    ("black", 900),
    ("heavy", 900),
)


@dataclasses.dataclass(frozen=True, order=True)
class FontFace:
  """One font file and the weights it can be drawn at.

  Attributes:
    family: family name as the source reports it, e.g. 'Roboto Slab'.
    italic: whether the file holds the italic (or oblique) style.
    path: absolute path of the .ttf/.otf file.
    weights: CSS weights (100-900) the file can be drawn at; one for a static file, several
      for a variable file whose `wght` axis is set before drawing.
    variable: whether `weights` are reached through the `wght` variation axis.
  """

  family: str
  italic: bool
  path: str
  weights: tuple[int, ...]
  variable: bool = False


def _fontpkg_faces() -> list[FontFace]:
  try:
    import fontpkg
  except ImportError:
    return []
  faces = []
  for fam in fontpkg.families().values():
    wght = next((a for a in fam.axes if a.tag == "wght"), None)
    for f in fam.files:
      italic = f.style == "italic"
      if f.variable and wght is not None:
        lo, hi = int(wght.min), int(wght.max)
        weights = tuple(sorted({min(max(w, lo), hi) for w in VARIABLE_WEIGHTS}))
        faces.append(FontFace(fam.name, italic, str(f.path), weights, variable=True))
      else:
        faces.append(FontFace(fam.name, italic, str(f.path), (f.weight or 400,)))
  return faces


def _weight_from_style(style: str) -> int:
  key = style.lower().replace(" ", "").replace("-", "")
  for word, weight in _STYLE_WEIGHTS:
    if word in key:
      return weight
  return 400


def _face_from_file(path: str) -> FontFace | None:
  try:
    family, style = ImageFont.truetype(path, 16).getname()
  except OSError:
    return None
  if not family or _NON_TEXT_FAMILY.search(family):
    return None
  style = style or "Regular"
  italic = "italic" in style.lower() or "oblique" in style.lower()
  return FontFace(family, italic, path, (_weight_from_style(style),))


def _files_under(folder: str, pattern: str = "*") -> list[str]:
  root = pathlib.Path(folder).expanduser()
  if not root.is_dir():
    return []
  return sorted(
      str(p) for p in root.rglob(pattern) if p.suffix.lower() in (".ttf", ".otf") and p.is_file()
  )


def _system_faces() -> list[FontFace]:
  faces = []
  for folder in SYSTEM_FONT_DIRS:
    for path in _files_under(folder):
      face = _face_from_file(path)
      if face is not None:
        faces.append(face)
  return faces


def _matplotlib_faces() -> list[FontFace]:
  # Located without importing matplotlib (importing it costs about a second).
  spec = importlib.util.find_spec("matplotlib")
  if spec is None or not spec.submodule_search_locations:
    return []
  folder = os.path.join(spec.submodule_search_locations[0], "mpl-data", "fonts", "ttf")
  faces = [_face_from_file(p) for p in _files_under(folder, "DejaVu*")]
  return [f for f in faces if f is not None]


_SOURCE_FNS = {"fontpkg": _fontpkg_faces, "system": _system_faces, "matplotlib": _matplotlib_faces}


@functools.cache
def discover(sources: Sequence[str] = SOURCES) -> tuple[FontFace, ...]:
  """Returns every font face found in `sources`, sorted, without checking glyphs.

  Args:
    sources: a subset of `SOURCES`. A family name found in an earlier source is skipped in
      later ones (DejaVu may be both a system font and matplotlib's).

  Raises:
    ValueError: if a source name is unknown.
  """
  sources = tuple(sources)
  unknown = [s for s in sources if s not in _SOURCE_FNS]
  if unknown:
    raise ValueError(f"sources: unknown {unknown}; expected a subset of {SOURCES}")
  seen_families: set[str] = set()
  faces: list[FontFace] = []
  for source in sources:
    found = _SOURCE_FNS[source]()
    new = [f for f in found if f.family.lower() not in seen_families]
    seen_families.update(f.family.lower() for f in found)
    faces.extend(new)
  unique = {f.path: f for f in faces}  # a file reachable twice (links) counts once
  return tuple(sorted(unique.values()))


def _glyph_bitmap(font: ImageFont.FreeTypeFont, char: str) -> bytes | None:
  """The bitmap of one character as bytes (size included), or None when it draws nothing."""
  left, top, right, bottom = font.getbbox(char)
  if right <= left or bottom <= top:
    return None
  image = Image.new("L", (right - left, bottom - top))
  ImageDraw.Draw(image).text((-left, -top), char, fill=255, font=font)
  if image.getbbox() is None:
    return None
  return f"{image.size}".encode() + image.tobytes()


class _GlyphProbe:
  """Compares glyphs of one font: boxes first (cheap), bitmaps only when boxes agree."""

  def __init__(self, path: str):
    self.font = ImageFont.truetype(path, 24, layout_engine=ImageFont.Layout.BASIC)
    self._boxes: dict[str, tuple[int, int, int, int]] = {}

  def box(self, char: str) -> tuple[int, int, int, int]:
    if char not in self._boxes:
      self._boxes[char] = self.font.getbbox(char)
    return self._boxes[char]

  def draws_nothing(self, char: str) -> bool:
    left, top, right, bottom = self.box(char)
    return right <= left or bottom <= top

  def same(self, a: str, b: str) -> bool:
    if self.box(a) != self.box(b):
      return False
    return _glyph_bitmap(self.font, a) == _glyph_bitmap(self.font, b)


def _missing(probe: _GlyphProbe, charset: str) -> str:
  return "".join(
      c
      for c in dict.fromkeys(charset)
      if not c.isspace() and (probe.draws_nothing(c) or probe.same(c, _NOTDEF_PROBE))
  )


# Lowercase letters that differ in shape from their capitals in ordinary fonts.
_DISTINCT_LOWERCASE = "aegnr"


def _shape(font: ImageFont.FreeTypeFont, char: str) -> np.ndarray:
  """The glyph's ink scaled to 16x16, zero-mean, unit norm (size-independent shape)."""
  left, top, right, bottom = font.getbbox(char)
  image = Image.new("L", (max(1, right - left), max(1, bottom - top)))
  ImageDraw.Draw(image).text((-left, -top), char, fill=255, font=font)
  box = image.getbbox()
  if box is None:
    return np.zeros((16, 16), np.float32)
  shape = np.asarray(image.crop(box).resize((16, 16), Image.Resampling.BILINEAR), np.float32)
  shape = shape - shape.mean()
  return shape / (np.linalg.norm(shape) + 1e-6)


def _lowercase_as_capitals(probe: _GlyphProbe) -> bool:
  # Ordinary fonts score about 0.1-0.5 here; all-caps and small-caps fonts about 1.
  similarity = [
      float((_shape(probe.font, c) * _shape(probe.font, c.upper())).sum())
      for c in _DISTINCT_LOWERCASE
  ]
  return float(np.median(similarity)) > 0.8


def missing_glyphs(path: str, charset: str) -> str:
  """Returns the characters of `charset` that the font file at `path` cannot draw.

  Whitespace is never reported. A character counts as missing when its bitmap is empty or
  identical to the font's `.notdef` glyph (what FreeType draws for an unmapped code point).

  Args:
    path: a .ttf/.otf file.
    charset: the characters to check.

  Returns:
    The missing characters, in `charset` order; '' when the font covers the charset.
  """
  return _missing(_GlyphProbe(path), charset)


def draws_lowercase_as_capitals(path: str) -> bool:
  """Whether the font draws lowercase letters as (possibly smaller) capitals.

  Compares the size-normalised ink of letters such as a/A, g/G, r/R, which differ in
  ordinary fonts and coincide in all-caps and small-caps fonts.
  """
  return _lowercase_as_capitals(_GlyphProbe(path))


def _has_both_cases(charset: str) -> bool:
  return any(c.islower() and c.upper() in charset for c in charset)


@functools.lru_cache(maxsize=4096)
def is_usable(path: str, charset: str) -> bool:
  """Whether the font file at `path` can draw every character of `charset` faithfully."""
  try:
    probe = _GlyphProbe(path)
    if _missing(probe, charset):
      return False
    return not (_has_both_cases(charset) and _lowercase_as_capitals(probe))
  except OSError:  # unreadable or not a font
    return False


@functools.cache
def usable_faces(charset: str, sources: Sequence[str] = SOURCES) -> tuple[FontFace, ...]:
  """Returns the faces from `discover(sources)` that can draw `charset` faithfully.

  The same test as `is_usable`, except that the lowercase-as-capitals check is made once
  per family (on its first file with all glyphs) since a family shares one design.
  """
  check_case = _has_both_cases(charset)
  caps_families: dict[str, bool] = {}
  usable = []
  for face in discover(tuple(sources)):
    try:
      probe = _GlyphProbe(face.path)
      if _missing(probe, charset):
        continue
      if check_case and face.family not in caps_families:
        caps_families[face.family] = _lowercase_as_capitals(probe)
    except OSError:  # unreadable or not a font
      continue
    if not caps_families.get(face.family, False):
      usable.append(face)
  return tuple(usable)


@functools.lru_cache(maxsize=2048)
def load(path: str, size: int, weight: int | None = None) -> ImageFont.FreeTypeFont:
  """Returns a cached Pillow font for `path` at `size` pixels per em.

  Args:
    path: a .ttf/.otf file.
    size: the em size in pixels.
    weight: for a variable font, the value to set on its `wght` axis (other axes keep their
      defaults); None draws the file's default instance.
  """
  font = ImageFont.truetype(path, size, layout_engine=ImageFont.Layout.BASIC)
  if weight is not None:
    axes = font.get_variation_axes()
    values = [
        min(max(weight, a["minimum"]), a["maximum"]) if a["name"] == b"Weight" else a["default"]
        for a in axes
    ]
    font.set_variation_by_axes(values)
  return font

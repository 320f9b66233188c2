"""Contact sheet of augmented word crops, to check by eye that augmentation keeps text readable.

  PYTHONPATH=. python scripts/augment_sheet.py --data tsv:/work/shared/data/real/iiit5k_train \
      --strength 1 --num 48 --out /tmp/aug.png

One row per example: its label, the preprocessed original (grayscale, height 32), then
--per_example augmented versions (crnn_jax.data.augment) of it, on a coloured background
so that the crops' edges show. Examples are a random sample of the source (--seed); ones
that cannot be read are skipped and counted. Any spec `crnn_jax.data.specs.open_source`
takes works, e.g. synth:1000.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

_DATA = flags.DEFINE_string("data", None, "Dataset spec, e.g. tsv:PATH or synth:N.")
_OUT = flags.DEFINE_string("out", None, "PNG file to write.")
_STRENGTH = flags.DEFINE_float("strength", 1.0, "Augmentation strength in [0, 1].")
_NUM = flags.DEFINE_integer("num", 48, "Examples (rows) on the sheet.")
_PER_EXAMPLE = flags.DEFINE_integer("per_example", 3, "Augmented versions per example.")
_SEED = flags.DEFINE_integer("seed", 0, "Picks the examples and seeds the augmentation.")
_HEIGHT = flags.DEFINE_integer("height", 32, "Model input height.")
_MAX_WIDTH = flags.DEFINE_integer("max_width", 256, "Widest preprocessed original.")
_SCALE = flags.DEFINE_integer("scale", 1, "Enlarge the sheet this many times (nearest).")
flags.mark_flags_as_required(["data", "out"])

# Sheet layout, in pixels before --scale.
_GAP = 6
_LABEL_WIDTH = 150
_BACKGROUND = (70, 110, 160)  # no crop is this colour, so every crop's edge shows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  import numpy as np
  from PIL import Image, ImageDraw, ImageFont

  from crnn_jax.data import augment, preprocess, readers, specs

  source = specs.open_source(_DATA.value, height=_HEIGHT.value)
  order = np.random.default_rng(_SEED.value).permutation(len(source))
  rows, bad = [], 0
  for index in order:
    if len(rows) == _NUM.value:
      break
    try:
      image, text, _ = source.read(int(index))
    except readers.BadExample as e:
      bad += 1
      print(f"skipped: {e}", file=sys.stderr)
      continue
    original = preprocess.resize(image, height=_HEIGHT.value, max_width=_MAX_WIDTH.value)
    # Seeded like the loader: (seed, example, version).
    versions = [augment.augment(original, np.random.default_rng([_SEED.value, int(index), k]),
                                _STRENGTH.value) for k in range(_PER_EXAMPLE.value)]
    rows.append((text, [original] + versions))

  row_h = _HEIGHT.value + _GAP
  width = _LABEL_WIDTH + max(
      (sum(im.shape[1] + _GAP for im in images) for _, images in rows), default=0)
  sheet = Image.new("RGB", (width + _GAP, len(rows) * row_h + _GAP), _BACKGROUND)
  draw = ImageDraw.Draw(sheet)
  font = ImageFont.load_default(size=min(16, _HEIGHT.value // 2))
  for r, (text, images) in enumerate(rows):
    y = _GAP + r * row_h
    draw.text((_GAP, y + _HEIGHT.value // 4), text[:18], fill=(255, 255, 255), font=font)
    x = _LABEL_WIDTH
    for im in images:
      sheet.paste(Image.fromarray(im, "L").convert("RGB"), (x, y))
      x += im.shape[1] + _GAP
  if _SCALE.value > 1:
    sheet = sheet.resize((sheet.width * _SCALE.value, sheet.height * _SCALE.value),
                         Image.Resampling.NEAREST)
  sheet.save(_OUT.value)
  print(f"{_OUT.value}: {len(rows)} examples x {_PER_EXAMPLE.value} augmented at strength "
        f"{_STRENGTH.value} from {_DATA.value}; {bad} unreadable skipped.")


if __name__ == "__main__":
  app.run(main)

"""Contact sheet of augmented word crops, to check by eye that augmentation keeps text readable.

  python scripts/augment_sheet.py --data tsv:FOLDER --strength 1 --num 48 --out aug.png

One row per example: its label, the preprocessed original (grayscale, height 32), then
--per-example augmented versions (crnn_jax.data.augment) of it, on a coloured background
so that the crops' edges show. Examples are a random sample of the source (--seed); ones
that cannot be read are skipped and counted. Any spec `crnn_jax.data.specs.open_source`
takes works, e.g. synth:1000.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crnn_jax import cli  # noqa: E402  (argparse only: --help answers at once)


def parse_args(argv=None):
  p = cli.parser(__doc__, __file__)
  p.add_argument(
      "--data", required=True, metavar="SPEC", help="dataset spec, e.g. tsv:FOLDER " "or synth:N"
  )
  p.add_argument("--out", required=True, metavar="FILE", help="the PNG file to write")
  p.add_argument("--strength", type=float, default=1.0, help="augmentation strength in [0, 1]")
  p.add_argument("--num", type=int, default=48, help="examples (rows) on the sheet")
  p.add_argument("--per-example", type=int, default=3, help="augmented versions per example")
  p.add_argument(
      "--seed", type=int, default=0, help="picks the examples and seeds the " "augmentation"
  )
  p.add_argument("--height", type=int, default=32, help="model input height")
  p.add_argument("--max-width", type=int, default=256, help="widest preprocessed original")
  p.add_argument(
      "--scale", type=int, default=1, help="enlarge the sheet this many times " "(nearest)"
  )
  return p.parse_args(argv)


# Sheet layout, in pixels before --scale.
_GAP = 6
_LABEL_WIDTH = 150
_BACKGROUND = (70, 110, 160)  # no crop is this colour, so every crop's edge shows


def draw_sheet(args) -> None:
  import numpy as np
  from PIL import Image, ImageDraw, ImageFont

  from crnn_jax.data import augment, preprocess, readers, specs

  source = specs.open_source(args.data, height=args.height)
  order = np.random.default_rng(args.seed).permutation(len(source))
  rows, bad = [], 0
  for index in order:
    if len(rows) == args.num:
      break
    try:
      image, text, _ = source.read(int(index))
    except readers.BadExample as e:
      bad += 1
      print(f"skipped: {e}", file=sys.stderr)
      continue
    original = preprocess.resize(image, height=args.height, max_width=args.max_width)
    # Seeded like the loader: (seed, example, version).
    versions = [
        augment.augment(original, np.random.default_rng([args.seed, int(index), k]), args.strength)
        for k in range(args.per_example)
    ]
    rows.append((text, [original] + versions))

  row_h = args.height + _GAP
  width = _LABEL_WIDTH + max(
      (sum(im.shape[1] + _GAP for im in images) for _, images in rows), default=0
  )
  sheet = Image.new("RGB", (width + _GAP, len(rows) * row_h + _GAP), _BACKGROUND)
  draw = ImageDraw.Draw(sheet)
  font = ImageFont.load_default(size=min(16, args.height // 2))
  for r, (text, images) in enumerate(rows):
    y = _GAP + r * row_h
    draw.text((_GAP, y + args.height // 4), text[:18], fill=(255, 255, 255), font=font)
    x = _LABEL_WIDTH
    for im in images:
      sheet.paste(Image.fromarray(im, "L").convert("RGB"), (x, y))
      x += im.shape[1] + _GAP
  if args.scale > 1:
    sheet = sheet.resize(
        (sheet.width * args.scale, sheet.height * args.scale), Image.Resampling.NEAREST
    )
  sheet.save(args.out)
  print(
      f"{args.out}: {len(rows)} examples x {args.per_example} augmented at strength "
      f"{args.strength} from {args.data}; {bad} unreadable skipped."
  )


def main(argv=None) -> int:
  return cli.run(draw_sheet, parse_args(argv))


if __name__ == "__main__":
  sys.exit(main())

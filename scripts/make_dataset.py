"""Render the synth_words TFDS dataset: python scripts/make_dataset.py --num N --seed S [...].

Renders N training images (and --num-validation validation images from a disjoint index
range) with one worker process per core, writes them as the TFDS dataset
`synth_words/n{N}_v{M}_s{S}_d{100*D}_h{H}` under --data-dir (default: $TFDS_DATA_DIR or
~/tensorflow_datasets), prints a progress line every few seconds (count, images/s, ETA),
then writes a contact sheet of 64 training samples as stored (grayscale, with labels) next
to the dataset and prints its path and the spec to read it with. No TensorFlow needed.
See docs/data.md.

Example (about 2 minutes on two free cores):
  python scripts/make_dataset.py --num 100000 --num-validation 2000 --seed 0 --data-dir data
"""

import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crnn_jax import cli  # noqa: E402  (argparse only: --help answers at once)


def parse_args(argv=None):
  p = cli.parser(__doc__, __file__)
  p.add_argument("--num", type=int, required=True, help="training images to render")
  p.add_argument("--seed", type=int, default=0, help="renderer seed")
  p.add_argument(
      "--num-validation",
      type=int,
      default=None,
      help="validation images (default: 1%% of --num, at least 100)",
  )
  p.add_argument(
      "--difficulty",
      type=float,
      default=1.0,
      help="0: clean dark text on light; 1: full MJSynth-like variety",
  )
  p.add_argument("--height", type=int, default=32, help="image height in pixels")
  p.add_argument(
      "--data-dir",
      default=None,
      metavar="DIR",
      help="TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)",
  )
  p.add_argument(
      "--num-workers", type=int, default=None, help="render processes (default: one per core)"
  )
  p.add_argument("--no-contact-sheet", action="store_true", help="skip the contact sheet")
  args = p.parse_args(argv)
  if args.num < 1:
    p.error(f"--num: expected >= 1, got {args.num}")
  if args.num_validation is None:
    args.num_validation = max(100, args.num // 100)
  return args


def contact_sheet(images, labels, columns: int = 4, cell_width: int = 300):
  """A white PIL image showing each (H, W, 1 or 3) uint8 image with its label below it.

  Images wider than a cell are shrunk to fit; the label is drawn in a monospaced font.
  """
  from PIL import Image, ImageDraw

  from crnn_jax.data import fonts

  height = max(image.shape[0] for image in images)
  label_size = 14
  cell_height = height + label_size + 10
  rows = -(-len(images) // columns)
  sheet = Image.new("RGB", (columns * cell_width, rows * cell_height), "white")
  draw = ImageDraw.Draw(sheet)
  mono = [f for f in fonts.discover() if f.family in ("DejaVu Sans Mono", "Roboto Mono")]
  label_font = fonts.load(mono[0].path, label_size) if mono else None
  for k, (image, label) in enumerate(zip(images, labels)):
    x, y = (k % columns) * cell_width, (k // columns) * cell_height
    picture = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
    if picture.width > cell_width - 8:
      picture = picture.resize((cell_width - 8, picture.height))
    sheet.paste(picture.convert("RGB"), (x + 4, y + 2))
    width = image.shape[1]
    draw.text((x + 4, y + height + 4), f"{label}  (w={width})", fill="black", font=label_font)
  return sheet


def make_dataset(args) -> None:
  from crnn_jax import extras

  extras.require("tfds", "scripts/make_dataset.py")
  extras.require("synth", "scripts/make_dataset.py")
  import tensorflow_datasets as tfds

  from crnn_jax.data import synth_words

  tfds.disable_progress_bar()  # our own progress line instead of tqdm's
  progress = logging.getLogger(synth_words.__name__)
  progress.setLevel(logging.INFO)
  handler = logging.StreamHandler(sys.stdout)
  handler.setFormatter(logging.Formatter("%(message)s"))
  progress.addHandler(handler)
  progress.propagate = False

  builder = synth_words.SynthWords(
      num_train=args.num,
      num_validation=args.num_validation,
      seed=args.seed,
      difficulty=args.difficulty,
      height=args.height,
      num_workers=args.num_workers,
      data_dir=args.data_dir,
  )
  name = f"synth_words/{builder.builder_config.name}"
  print(
      f"{name}: {args.num} train + {args.num_validation} validation images -> {builder.data_dir}",
      flush=True,
  )
  start = time.perf_counter()
  builder.download_and_prepare()
  print(f"built in {time.perf_counter() - start:.0f} s", flush=True)

  if not args.no_contact_sheet:
    train = builder.as_data_source("train")
    records = [train[i] for i in range(min(64, len(train)))]
    sheet = contact_sheet([r["image"] for r in records], [r["label"].decode() for r in records])
    path = os.path.join(os.path.dirname(builder.data_dir), "contact_sheet.png")
    sheet.save(path)
    print(f"contact sheet: {path}")
  data_dir = os.path.dirname(os.path.dirname(os.path.dirname(builder.data_dir)))
  print(
      f"train on it with: python scripts/train.py --config configs/base.py --workdir W "
      f"--config.data.train=tfds:{name}:train,data_dir={data_dir} "
      f"--config.data.eval=tfds:{name}:validation,data_dir={data_dir}"
  )
  print(f"read with: tfds.builder('{name}', data_dir='{data_dir}').as_data_source('train')")


def main(argv=None) -> int:
  return cli.run(make_dataset, parse_args(argv))


if __name__ == "__main__":
  sys.exit(main())

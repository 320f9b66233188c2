"""Draw a training run's learning curve as a PNG: python scripts/plot_curve.py --workdir W --out F.

Reads the run's TensorBoard event files (``W/tensorboard``) and draws two panels with
Pillow: the training loss, and the evaluation word accuracy per evaluation set (the
scene-text protocol, ``word_acc_ci``). Resumed runs write several event files; later
points of a step replace earlier ones.
"""

import glob
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crnn_jax import cli  # noqa: E402  (argparse only: --help answers at once)

COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189))


def parse_args(argv=None):
  p = cli.parser(__doc__, __file__)
  p.add_argument("--workdir", required=True, metavar="DIR", help="the training run's workdir")
  p.add_argument("--out", default="curve.png", metavar="FILE", help="the PNG to write")
  p.add_argument("--metric", default="word_acc_ci", help="the evaluation metric to draw")
  return p.parse_args(argv)


def read_scalars(workdir: str) -> dict:
  """{tag: {step: value}} from every event file of the run, in file order."""
  from tensorboardX.proto import event_pb2

  files = sorted(glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*")))
  if not files:
    raise cli.UserError(
        f"--workdir {workdir}: no TensorBoard event files in "
        f"{workdir}/tensorboard; give the workdir of a training run."
    )
  out = {}
  for path in files:
    with open(path, "rb") as f:
      data = f.read()
    pos = 0
    while pos + 12 <= len(data):  # TFRecord: length, its CRC, the record, its CRC
      (length,) = struct.unpack("<Q", data[pos : pos + 8])
      record = data[pos + 12 : pos + 12 + length]
      pos += 12 + length + 4
      event = event_pb2.Event.FromString(record)
      for value in event.summary.value:
        if value.HasField("simple_value"):
          out.setdefault(value.tag, {})[event.step] = value.simple_value
  return out


def draw(scalars: dict, metric: str, path: str):
  from PIL import Image, ImageDraw

  sets = sorted(t for t in scalars if t.startswith("eval/") and t.endswith("/" + metric))
  loss = scalars.get("train/loss", {})
  width, height, pad = 900, 640, 60
  image = Image.new("RGB", (width, height), "white")
  d = ImageDraw.Draw(image)
  last = max([max(v) for v in scalars.values() if v] + [1])
  panels = [
      ("training loss", {"train/loss": loss}, max(loss.values(), default=1.0)),
      (f"validation {metric}", {t: scalars[t] for t in sets}, 1.0),
  ]
  for k, (title, series, top) in enumerate(panels):
    y0, y1 = pad + k * (height // 2), (k + 1) * (height // 2) - pad // 2
    d.rectangle((pad, y0, width - pad // 2, y1), outline="black")
    d.text((pad, y0 - 16), title, fill="black")
    for frac in (0.0, 0.5, 1.0):
      y = y1 - frac * (y1 - y0)
      d.text((8, y - 6), f"{frac * top:.2f}", fill="black")
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
      x = pad + frac * (width - 1.5 * pad)
      d.text((x - 10, y1 + 4), f"{int(frac * last)}", fill="black")
    for i, (tag, values) in enumerate(sorted(series.items())):
      points = [
          (pad + s / last * (width - 1.5 * pad), y1 - min(v, top) / top * (y1 - y0))
          for s, v in sorted(values.items())
      ]
      colour = COLOURS[i % len(COLOURS)]
      if len(points) > 1:
        d.line(points, fill=colour, width=2)
      for x, y in points if len(points) < 60 else []:
        d.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
      name = tag.split("/")[1] if tag.startswith("eval/") else tag
      final = f" {sorted(values.items())[-1][1]:.3f}" if values else ""
      d.text((width - 260, y0 + 8 + 14 * i), name + final, fill=colour)
  d.text((width // 2 - 20, height - 18), "step", fill="black")
  image.save(path)


def plot(args) -> None:
  cli.existing_folder("--workdir", args.workdir, "the workdir of a training run")
  scalars = read_scalars(args.workdir)
  draw(scalars, args.metric, args.out)
  print(f"wrote {args.out}")


def main(argv=None) -> int:
  return cli.run(plot, parse_args(argv))


if __name__ == "__main__":
  sys.exit(main())

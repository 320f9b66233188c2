"""Export a trained model: python scripts/export.py --workdir DIR --out EXPORT_DIR.

Writes a `jax.export` artefact of preprocessed images -> logits + greedy decoding, with
symbolic batch size and width, plus meta.json. Run it without this project's code:
  python crnn_jax/export_loader.py EXPORT_DIR image.png ...
See docs/inference.md.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crnn_jax import cli  # noqa: E402  (argparse only: --help answers at once)


def parse_args(argv=None):
  p = cli.parser(__doc__, __file__)
  cli.add_checkpoint_args(p, required=True)
  p.add_argument(
      "--out", required=True, metavar="EXPORT_DIR", help="folder to write the export into"
  )
  p.add_argument(
      "--platforms",
      default=None,
      help="comma-separated, e.g. cpu,cuda (default: this machine's backend)",
  )
  p.add_argument(
      "--conv-impl",
      default=None,
      help="convolution traced into the artefact (auto, xla, im2col, winograd); "
      "default the checkpoint's. Use xla when exporting for a GPU from a CPU",
  )
  p.add_argument(
      "--compute-dtype",
      default=None,
      help="dtype traced into the artefact (auto, float32, bfloat16); default the "
      "checkpoint's model.compute_dtype, with auto resolved on this machine",
  )
  return p.parse_args(argv)


def export(args) -> None:
  flag = "--workdir" if args.workdir else "--checkpoint"
  cli.existing_folder(
      flag,
      args.workdir or args.checkpoint,
      "the workdir of a training run " "or a checkpoint folder",
  )
  cli.writable_folder("--out", args.out)
  from absl import logging

  logging.set_verbosity(logging.ERROR)  # Orbax reports read-only managers at WARNING

  from crnn_jax import export as export_lib

  platforms = args.platforms.split(",") if args.platforms else None
  meta = export_lib.export_checkpoint(
      args.workdir or args.checkpoint,
      args.out,
      platforms=platforms,
      conv_impl=args.conv_impl,
      compute_dtype=args.compute_dtype,
  )
  size = os.path.getsize(os.path.join(args.out, export_lib.MODEL_FILE))
  print(
      f"Exported {meta['checkpoint']['path']} (step {meta['checkpoint']['step']}) to "
      f"{args.out}: {export_lib.MODEL_FILE} ({size / 1e6:.1f} MB, platforms "
      f"{','.join(meta['platforms'])}), {export_lib.META_FILE}.\n"
      f"Run it: python crnn_jax/export_loader.py {args.out} IMAGE..."
  )


def main(argv=None) -> int:
  return cli.run(export, parse_args(argv))


if __name__ == "__main__":
  sys.exit(main())

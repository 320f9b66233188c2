"""Export a trained model: python scripts/export.py --workdir DIR --output EXPORT_DIR.

Writes a `jax.export` artefact of preprocessed images -> logits + greedy decoding, with
symbolic batch size and width, plus meta.json. Run it without this project's code:
  python crnn_jax/export_loader.py EXPORT_DIR image.png ...
See docs/inference.md.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  where = p.add_mutually_exclusive_group(required=True)
  where.add_argument("--workdir", help="training workdir (its best checkpoint, else latest)")
  where.add_argument("--checkpoint", help="a checkpoint folder (workdir, best/, checkpoints/ "
                     "or a step folder)")
  p.add_argument("--output", required=True, help="folder to write the export into")
  p.add_argument("--platforms", default=None,
                 help="comma-separated, e.g. cpu,cuda (default: this machine's backend)")
  p.add_argument("--conv-impl", default=None,
                 help="convolution traced into the artefact (auto, xla, im2col, winograd); "
                 "default the checkpoint's. Use xla when exporting for a GPU from a CPU")
  p.add_argument("--compute-dtype", default=None,
                 help="dtype traced into the artefact (auto, float32, bfloat16); default the "
                 "checkpoint's model.compute_dtype, with auto resolved on this machine")
  args = p.parse_args(argv)
  from absl import logging
  logging.set_verbosity(logging.ERROR)  # Orbax reports read-only managers at WARNING

  from crnn_jax import export

  platforms = args.platforms.split(",") if args.platforms else None
  meta = export.export_checkpoint(args.workdir or args.checkpoint, args.output,
                                  platforms=platforms, conv_impl=args.conv_impl,
                                  compute_dtype=args.compute_dtype)
  size = os.path.getsize(os.path.join(args.output, export.MODEL_FILE))
  print(f"Exported {meta['checkpoint']['path']} (step {meta['checkpoint']['step']}) to "
        f"{args.output}: {export.MODEL_FILE} ({size / 1e6:.1f} MB, platforms "
        f"{','.join(meta['platforms'])}), {export.META_FILE}.\n"
        f"Run it: python crnn_jax/export_loader.py {args.output} IMAGE...")
  return 0


if __name__ == "__main__":
  sys.exit(main())

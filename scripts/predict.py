"""Read the text in images: python scripts/predict.py [--workdir DIR] IMAGE_OR_DIR [...].

Without --workdir, --checkpoint or --weights it uses the pretrained model shipped with
crnn_jax (crnn_jax/pretrained/crnn_seed.npz, see docs/pretrained.md); stderr says which
model was loaded.

Prints `path<TAB>text<TAB>confidence` per image (with --top-k K: K text/confidence pairs),
or one JSON object per line with --json. Folders are walked for files Pillow can read;
a file that cannot be read gets an error line on stderr, the rest still run, and the
exit status is 1. See docs/inference.md.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crnn_jax import cli  # noqa: E402  (argparse only: --help answers at once)


def parse_args(argv=None):
  p = cli.parser(__doc__, __file__)
  p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
  cli.add_model_args(p, batch_size=32)
  p.add_argument("--top-k", type=int, default=1, help="hypotheses per image (beam search)")
  p.add_argument("--json", action="store_true", help="one JSON object per line")
  args = p.parse_args(argv)
  cli.check_model_args(p, args)
  return args


def predict(args) -> int:
  recognizer = cli.load_recognizer(args, top_k=args.top_k)
  from crnn_jax import recognizer as recognizer_lib

  paths = recognizer_lib.expand_paths(args.inputs)
  if not paths:
    raise cli.UserError(
        f"no image files found in {' '.join(args.inputs)}; give images or " f"folders holding some."
    )
  failed = 0
  for r in recognizer_lib.recognize_files(recognizer, paths):
    if r.error is not None:
      failed += 1
      if args.json:
        print(json.dumps({"path": r.path, "error": r.error}), flush=True)
      print(f"error: {r.path}: {r.error}", file=sys.stderr, flush=True)
      continue
    if args.json:
      text, conf = r.hypotheses[0]
      entry = {"path": r.path, "text": text, "confidence": conf}
      if args.top_k > 1:
        entry["candidates"] = [{"text": t, "confidence": c} for t, c in r.hypotheses]
      print(json.dumps(entry, ensure_ascii=False), flush=True)
    else:
      print("\t".join([r.path] + [f"{t}\t{c:.4f}" for t, c in r.hypotheses]), flush=True)
  return 1 if failed else 0


def main(argv=None) -> int:
  return cli.run(predict, parse_args(argv))


if __name__ == "__main__":
  sys.exit(main())

"""Read the text in images: python scripts/predict.py [--workdir DIR] IMAGE_OR_DIR [...].

Without --workdir, --checkpoint or --weights it uses the pretrained model shipped with
crnn_jax (crnn_jax/pretrained/crnn_seed.npz, see docs/pretrained.md); stderr says which
model was loaded.

Prints `path<TAB>text<TAB>confidence` per image (with --top-k K: K text/confidence pairs),
or one JSON object per line with --json. Folders are walked for files Pillow can read;
a file that cannot be read gets an error line on stderr, the rest still run, and the
exit status is 1. See docs/inference.md.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  where = p.add_mutually_exclusive_group()
  where.add_argument("--workdir", help="training workdir (its best checkpoint, else latest)")
  where.add_argument("--checkpoint", help="a checkpoint folder (workdir, best/, checkpoints/ "
                     "or a step folder)")
  where.add_argument("--weights", metavar="FILE", help="a weights file (scripts/"
                     "export_weights.py). Default, when no model is given: the pretrained "
                     "model shipped with crnn_jax, crnn_jax/pretrained/crnn_seed.npz")
  p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
  p.add_argument("--decode", choices=("greedy", "beam", "lexicon"), default=None,
                 help="default: greedy, or beam when --top-k > 1")
  p.add_argument("--beam-size", type=int, default=8)
  p.add_argument("--top-k", type=int, default=1, help="hypotheses per image (beam search)")
  p.add_argument("--lexicon", metavar="FILE", help="word list, one per line (--decode lexicon)")
  p.add_argument("--batch-size", type=int, default=32)
  p.add_argument("--json", action="store_true", help="one JSON object per line")
  args = p.parse_args(argv)
  if args.decode is None:
    args.decode = "lexicon" if args.lexicon else ("beam" if args.top_k > 1 else "greedy")
  if args.decode == "greedy" and args.top_k > 1:
    p.error("--top-k > 1 needs --decode beam or lexicon")
  if args.decode == "lexicon" and not args.lexicon:
    p.error("--decode lexicon needs --lexicon FILE")
  args.beam_size = max(args.beam_size, args.top_k)
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  from absl import logging
  logging.set_verbosity(logging.ERROR)  # Orbax reports read-only managers at WARNING

  from crnn_jax import recognizer as recognizer_lib

  lexicon = None
  if args.lexicon:
    with open(args.lexicon, encoding="utf-8") as f:
      lexicon = [line.strip() for line in f if line.strip()]
  options = dict(batch_size=args.batch_size, decode=args.decode, beam_size=args.beam_size,
                 top_k=args.top_k, lexicon=lexicon)
  try:
    if args.workdir or args.checkpoint:
      recognizer = recognizer_lib.Recognizer.from_checkpoint(args.workdir or args.checkpoint,
                                                             **options)
    else:
      recognizer = recognizer_lib.Recognizer.from_weights(args.weights or "pretrained",
                                                          **options)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"model: {recognizer.checkpoint.describe()}", file=sys.stderr, flush=True)
  paths = recognizer_lib.expand_paths(args.inputs)
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
  if not paths:
    print("error: no image files found in " + " ".join(args.inputs), file=sys.stderr)
    return 1
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())

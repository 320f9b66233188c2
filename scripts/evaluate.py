"""Evaluate a trained model: python scripts/evaluate.py [--workdir DIR] --data SPEC [...].

Without --workdir, --checkpoint or --weights it evaluates the pretrained model shipped with
crnn_jax (crnn_jax/pretrained/crnn_seed.npz, see docs/pretrained.md).

Prints one row per dataset: N, word accuracy (exact), word accuracy under the scene-text
benchmark protocol (case-insensitive, a-z0-9 only), character error rate, 1 - normalised
edit distance, mean confidence and images/s. Every example is evaluated; unreadable files
are listed. See docs/inference.md.
"""

import argparse
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  where = p.add_mutually_exclusive_group()
  where.add_argument("--workdir", help="training workdir (its best checkpoint, else latest)")
  where.add_argument("--checkpoint", help="a checkpoint folder (workdir, best/, checkpoints/ "
                     "or a step folder)")
  where.add_argument("--weights", metavar="FILE", help="a weights file (scripts/"
                     "export_weights.py). Default, when no model is given: the pretrained "
                     "model shipped with crnn_jax, crnn_jax/pretrained/crnn_seed.npz")
  p.add_argument("--data", action="append", required=True, metavar="SPEC",
                 help="dataset spec, repeatable: tsv:FOLDER (with labels.tsv) or "
                 "synth:N[,seed=S]")
  p.add_argument("--decode", choices=("greedy", "beam", "lexicon"), default="greedy")
  p.add_argument("--beam-size", type=int, default=8, help="beams for beam/lexicon decoding")
  p.add_argument("--lexicon", metavar="FILE", help="word list, one per line (--decode lexicon)")
  p.add_argument("--batch-size", type=int, default=64)
  p.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
  p.add_argument("--errors", metavar="FILE.png", help="write a grid of the worst mistakes "
                 "(one file per dataset, suffixed, when there are several)")
  p.add_argument("--num-errors", type=int, default=32, help="mistakes in the --errors grid")
  args = p.parse_args(argv)
  if args.decode == "lexicon" and not args.lexicon:
    p.error("--decode lexicon needs --lexicon FILE")
  if args.lexicon and args.decode != "lexicon":
    p.error("--lexicon is used only with --decode lexicon")
  return args


def errors_path(path: str, spec: str, several: bool) -> str:
  """``path``, or with several datasets ``path`` suffixed with the dataset's name."""
  if not several:
    return path
  root, ext = os.path.splitext(path)
  kind, _, rest = spec.partition(":")
  name = os.path.basename(os.path.normpath(rest)) if kind == "tsv" else spec
  return f"{root}_{re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('_') or 'data'}{ext or '.png'}"


def main(argv=None) -> int:
  args = parse_args(argv)
  from absl import logging
  logging.set_verbosity(logging.ERROR)  # Orbax reports read-only managers at WARNING
  from PIL import Image

  from crnn_jax import evaluation
  from crnn_jax.recognizer import Recognizer

  lexicon = None
  if args.lexicon:
    with open(args.lexicon, encoding="utf-8") as f:
      lexicon = [line.strip() for line in f if line.strip()]
  options = dict(batch_size=args.batch_size, decode=args.decode, beam_size=args.beam_size,
                 lexicon=lexicon)
  try:
    if args.workdir or args.checkpoint:
      recognizer = Recognizer.from_checkpoint(args.workdir or args.checkpoint, **options)
    else:
      recognizer = Recognizer.from_weights(args.weights or "pretrained", **options)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  loaded = recognizer.checkpoint
  print(f"model: {loaded.describe()}", file=sys.stderr, flush=True)
  print(f"{loaded.kind}: {loaded.where} (step {loaded.step}); decode: {args.decode}"
        + (f", beam {args.beam_size}" if args.decode != "greedy" else "")
        + (f", lexicon of {recognizer.lexicon_size} words ({recognizer.lexicon_skipped} "
           f"with other characters left out)" if lexicon else ""), flush=True)
  results = []
  for spec in args.data:
    r = evaluation.evaluate(recognizer, spec, num_mistakes=args.num_errors if args.errors else 0)
    results.append(r)
    if r.report.skipped:
      print(r.report.describe(), file=sys.stderr)
    if r.unknown_labels:
      print(f"{spec}: {r.unknown_labels} labels have characters the model cannot output "
            f"(evaluated; they count as exact-match mistakes).", file=sys.stderr)
    if args.errors:
      path = errors_path(args.errors, spec, len(args.data) > 1)
      Image.fromarray(evaluation.errors_image(r.mistakes)).save(path)
      print(f"{spec}: {len(r.mistakes)} worst mistakes drawn in {path}", file=sys.stderr)
  print(evaluation.format_table(results))
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(evaluation.to_json(results), f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())

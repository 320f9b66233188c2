"""Evaluate a trained model: python scripts/evaluate.py [--workdir DIR] --data SPEC [...].

Without --workdir, --checkpoint or --weights it evaluates the pretrained model shipped with
crnn_jax (crnn_jax/pretrained/crnn_seed.npz, see docs/pretrained.md).

Prints one row per dataset: N, word accuracy (exact), word accuracy under the scene-text
benchmark protocol (case-insensitive, a-z0-9 only), character error rate, 1 - normalised
edit distance, mean confidence and images/s. Every example is evaluated; unreadable files
are listed. See docs/inference.md.
"""

import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crnn_jax import cli  # noqa: E402  (argparse only: --help answers at once)


def parse_args(argv=None):
  p = cli.parser(__doc__, __file__)
  cli.add_model_args(p, batch_size=64)
  p.add_argument(
      "--data",
      action="append",
      required=True,
      metavar="SPEC",
      help="dataset spec, repeatable: tsv:FOLDER (with labels.tsv), "
      "synth:N[,seed=S][,difficulty=D], or any spec of the README's table",
  )
  p.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
  p.add_argument(
      "--errors",
      metavar="FILE.png",
      help="write a grid of the worst mistakes "
      "(one file per dataset, suffixed, when there are several)",
  )
  p.add_argument("--num-errors", type=int, default=32, help="mistakes in the --errors grid")
  args = p.parse_args(argv)
  cli.check_model_args(p, args)
  return args


def errors_path(path: str, spec: str, several: bool) -> str:
  """``path``, or with several datasets ``path`` suffixed with the dataset's name."""
  if not several:
    return path
  root, ext = os.path.splitext(path)
  kind, _, rest = spec.partition(":")
  name = os.path.basename(os.path.normpath(rest)) if kind == "tsv" else spec
  return f"{root}_{re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('_') or 'data'}{ext or '.png'}"


def evaluate(args) -> None:
  recognizer = cli.load_recognizer(args)
  from PIL import Image

  from crnn_jax import evaluation

  loaded = recognizer.checkpoint
  print(
      f"{loaded.kind}: {loaded.where} (step {loaded.step}); decode: {args.decode}"
      + (f", beam {args.beam_size}" if args.decode != "greedy" else "")
      + (
          f", lexicon of {recognizer.lexicon_size} words ({recognizer.lexicon_skipped} "
          f"with other characters left out)"
          if args.lexicon
          else ""
      ),
      flush=True,
  )
  results = []
  for spec in args.data:
    r = evaluation.evaluate(recognizer, spec, num_mistakes=args.num_errors if args.errors else 0)
    results.append(r)
    if r.report.skipped:
      print(r.report.describe(), file=sys.stderr)
    if r.unknown_labels:
      print(
          f"{spec}: {r.unknown_labels} labels have characters the model cannot output "
          f"(evaluated; they count as exact-match mistakes).",
          file=sys.stderr,
      )
    if args.errors:
      path = errors_path(args.errors, spec, len(args.data) > 1)
      Image.fromarray(evaluation.errors_image(r.mistakes)).save(path)
      print(f"{spec}: {len(r.mistakes)} worst mistakes drawn in {path}", file=sys.stderr)
  print(evaluation.format_table(results))
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(evaluation.to_json(results), f, indent=2)


def main(argv=None) -> int:
  return cli.run(evaluate, parse_args(argv))


if __name__ == "__main__":
  sys.exit(main())

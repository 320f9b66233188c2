"""Write a weights file from a run: python scripts/export_weights.py --workdir DIR --out FILE.

Reads the workdir's best checkpoint (else its latest; --step N for another), writes its
parameters (float16 by default), BatchNorm statistics and metadata into one file with a
SHA-256 digest (crnn_jax/weights.py), then reloads the file and prints the largest
difference between the output logits of the stored and the original weights on a few
rendered words (or --image files), and the file's size. To ship the pretrained model:

  python scripts/export_weights.py --workdir runs/seed --config-name configs/base.py \
      --out crnn_jax/pretrained/crnn_seed.npz

then fill in docs/pretrained.md. See docs/pretrained.md for the format.

--average-steps 2000,2250,2500 writes the mean of those checkpoints' parameters and
BatchNorm statistics instead of one checkpoint's (checkpoint averaging: steps from the
low-learning-rate end of one run, whose mean often generalises a little better than any
of them; evaluate it before shipping it). The metadata is the last step's.
"""

import dataclasses
import datetime
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crnn_jax import cli, weights  # noqa: E402  (numpy at most: --help answers at once)


def parse_args(argv=None):
  p = cli.parser(__doc__, __file__)
  p.add_argument(
      "--workdir", required=True, metavar="DIR", help="the training workdir to export from"
  )
  p.add_argument(
      "--step",
      type=int,
      default=None,
      help="the step to export (in best/ or "
      "checkpoints/); default the best checkpoint, else the latest",
  )
  p.add_argument(
      "--average-steps",
      default="",
      metavar="N,N,...",
      help="export the mean of these steps' "
      "checkpoints (in best/ or checkpoints/) instead of one checkpoint",
  )
  p.add_argument(
      "--out",
      required=True,
      metavar="FILE",
      help="the weights file to write, " "e.g. crnn_jax/pretrained/crnn_seed.npz",
  )
  p.add_argument(
      "--dtype",
      choices=weights.STORAGE_DTYPES,
      default="float16",
      help="storage of the parameters (BatchNorm statistics stay float32)",
  )
  p.add_argument(
      "--config-name",
      default="",
      metavar="FILE",
      help="the config the run was " "trained with (e.g. configs/base.py), recorded as provenance",
  )
  p.add_argument("--note", default="", help="free text recorded as provenance (data " "mixture...)")
  p.add_argument(
      "--image",
      action="append",
      default=[],
      metavar="FILE",
      help="an image " "file to compare the logits on, repeatable; default: rendered words",
  )
  p.add_argument(
      "--num-check-images",
      type=int,
      default=8,
      help="rendered words to compare " "the logits on when no --image is given",
  )
  return p.parse_args(argv)


def checkpoint_path(workdir: str, step: int | None) -> str:
  """The folder ``load_checkpoint`` should read for ``--step`` (the workdir without it)."""
  if step is None:
    return workdir
  for sub in ("best", "checkpoints"):
    folder = os.path.join(workdir, sub, str(step))
    if os.path.isdir(folder):
      return folder
  raise cli.UserError(
      f"--step {step}: no step folder {step} in {workdir}/best or "
      f"{workdir}/checkpoints; leave --step out for the best checkpoint."
  )


def load_average(workdir: str, steps_arg: str):
  """The ``Loaded`` of the last of ``steps_arg``'s steps, its variables replaced by the mean
  of every listed step's (all the same model and charset)."""
  import jax
  import numpy as np

  from crnn_jax import recognizer as recognizer_lib

  try:
    steps = [int(s) for s in steps_arg.split(",")]
  except ValueError:
    steps = []
  if len(steps) < 2 or len(set(steps)) != len(steps):
    raise cli.UserError(
        f"--average-steps {steps_arg!r}: expected two or more different step numbers, "
        f"comma-separated (e.g. 2000,2250,2500)."
    )
  loaded = [recognizer_lib.load_checkpoint(checkpoint_path(workdir, s)) for s in steps]
  for other in loaded[:-1]:
    if (other.meta["model"], other.meta["charset"]) != (
        loaded[-1].meta["model"],
        loaded[-1].meta["charset"],
    ):
      raise cli.UserError(
          f"--average-steps: {other.where} and {loaded[-1].where} are different models."
      )
  mean = jax.tree.map(
      lambda *xs: np.mean([np.asarray(x, np.float32) for x in xs], axis=0),
      *[x.variables for x in loaded],
  )
  last = loaded[-1]
  where = f"mean of steps {','.join(map(str, steps))} of {workdir}"
  return dataclasses.replace(last, variables=jax.device_put(mean), where=where)


def check_images(recognizer, paths: list[str], count: int) -> list:
  """The comparison images: the files given, else ``count`` words rendered at difficulty 0.3."""
  from crnn_jax import recognizer as recognizer_lib

  if paths:
    return [recognizer.preprocess(recognizer_lib.read_image(p)) for p in paths]
  from crnn_jax import extras

  extras.require("synth", "checking on rendered words (or give --image FILE)")
  from crnn_jax.data import render

  renderer = render.Renderer(
      seed=12345, height=recognizer.height, difficulty=0.3, charset=recognizer.charset.chars
  )
  return [recognizer.preprocess(renderer.render(i)[0]) for i in range(count)]


def max_logit_difference(model, variables_a, variables_b, arrays) -> tuple[float, float]:
  """Largest |logit_a - logit_b| over the valid frames of images padded to one width,
  and the largest |logit_a| for scale."""
  import jax
  import numpy as np

  width = max(a.shape[1] for a in arrays)
  width += -width % 4  # a multiple of the model's width stride
  # uint8, as the Recognizer feeds the model; the model scales it.
  x = np.zeros((len(arrays), arrays[0].shape[0], width, 1), np.uint8)
  widths = np.array([a.shape[1] for a in arrays], np.int32)
  for i, a in enumerate(arrays):
    x[i, :, : a.shape[1], 0] = a
  apply = jax.jit(lambda v: model.apply(v, x, widths, train=False))
  logits_a, paddings = jax.device_get(apply(variables_a))
  logits_b, _ = jax.device_get(apply(variables_b))
  valid = paddings < 0.5
  return (float(np.abs(logits_a - logits_b)[valid].max()), float(np.abs(logits_a)[valid].max()))


def export_weights(args) -> None:
  cli.existing_folder("--workdir", args.workdir, "the workdir of a training run")
  from absl import logging

  logging.set_verbosity(logging.ERROR)  # Orbax reports read-only managers at WARNING
  import jax

  from crnn_jax import models
  from crnn_jax import recognizer as recognizer_lib

  if args.average_steps:
    if args.step is not None:
      raise cli.UserError("--step and --average-steps: give one of them.")
    loaded = load_average(args.workdir, args.average_steps)
  else:
    loaded = recognizer_lib.load_checkpoint(checkpoint_path(args.workdir, args.step))
  # The checkpoint's metadata (model config, charset, case_fold, data, param_shapes) as is.
  meta = dict(loaded.meta, step=loaded.step)
  meta["provenance"] = {
      "checkpoint": loaded.where,
      "config": args.config_name,
      "note": args.note,
      "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "jax_version": jax.__version__,
  }
  written = weights.save_weights(args.out, loaded.variables, meta, dtype=args.dtype)
  print(
      f"Wrote {written.path} from {loaded.where} (step {loaded.step}): "
      f"{models.count_params(loaded.variables['params']):,} parameters "
      f"({args.dtype}) + {models.count_params(loaded.variables['batch_stats']):,} BatchNorm "
      f"statistics (float32)."
  )
  if written.float32_params:
    print(
        f"Kept in float32 (float16 would overflow or lose precision): "
        f"{', '.join(written.float32_params)}"
    )

  # Read back through the public loader, as users will.
  reloaded = recognizer_lib.Recognizer.from_weights(written.path)
  original = recognizer_lib.Recognizer(
      loaded.model,
      loaded.variables,
      loaded.charset,
      width_buckets=reloaded.width_buckets,
      resize_mode=reloaded.resize_mode,
  )
  arrays = check_images(reloaded, args.image, args.num_check_images)
  diff, scale = max_logit_difference(loaded.model, loaded.variables, reloaded.variables, arrays)
  texts_file = [t for (t, _), in reloaded.recognize_preprocessed(arrays)]
  texts_orig = [t for (t, _), in original.recognize_preprocessed(arrays)]
  same = sum(a == b for a, b in zip(texts_file, texts_orig))
  print(
      f"Reloaded and checked on {len(arrays)} images: largest |{args.dtype} - float32| "
      f"output-logit difference {diff:.3g} (logits up to {scale:.3g}); the same greedy "
      f"text for {same} of {len(arrays)} ({', '.join(texts_file[:8])})."
  )
  print(
      f"File size: {written.num_bytes:,} bytes ({written.num_bytes / 1e6:.1f} MB); "
      f"sha256 {written.sha256}."
  )


def main(argv=None) -> int:
  return cli.run(export_weights, parse_args(argv))


if __name__ == "__main__":
  sys.exit(main())

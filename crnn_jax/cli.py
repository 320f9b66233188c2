"""The command line of ``scripts/``: one option style, the shared model options, user errors.

Every script parses its options with argparse, spelled with hyphens (``--batch-size 64``
or ``--batch-size=64``), through ``parser``; ``scripts/train.py`` adds ml_collections'
``--config FILE`` with its ``--config.GROUP.FIELD=VALUE`` overrides (``parse_config``).
``evaluate.py`` and ``predict.py`` share the model options (``add_model_args``,
``load_recognizer``).

``run`` calls a script's main. A mistake in what the user gave prints one line,
``error: ...``, saying which input is wrong and what to change, and exits 1 (a mistake in
the options themselves exits 2). User errors are ``UserError``, a missing extra, and the
``ValueError`` and ``OSError`` the library raises for wrong input (STYLE.md, Errors); any
other exception is a bug and keeps its traceback. ``--verbose`` shows the traceback of user
errors too.

Nothing here imports jax, so ``--help`` and option mistakes answer at once.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence

from crnn_jax import extras


class UserError(Exception):
  """Something the user gave is wrong; the message names it and says what to change."""


# What counts as a user error when it reaches ``run`` (see the module docstring).
USER_ERRORS = (UserError, extras.MissingExtraError, ValueError, OSError)


class _Parser(argparse.ArgumentParser):
  """argparse whose option errors are one line too."""

  def error(self, message):
    self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def parser(doc: str, script: str) -> argparse.ArgumentParser:
  """A parser for ``script`` (its ``__file__``) whose help starts with its docstring ``doc``.

  Long options only, spelled in full (no abbreviations), plus ``--verbose``.
  """
  p = _Parser(
      prog=os.path.basename(script),
      description=doc,
      formatter_class=argparse.RawDescriptionHelpFormatter,
      allow_abbrev=False,
  )
  # Listed after the script's own options (argparse prints groups in creation order).
  p.add_argument_group("every script").add_argument(
      "--verbose",
      action="store_true",
      help="show the traceback of an error, not just its " "one line",
  )
  return p


def run(
    main: Callable[[argparse.Namespace], int | None],
    args: argparse.Namespace,
    *,
    user_errors: tuple[type[BaseException], ...] = (),
) -> int:
  """Calls ``main(args)``; returns its exit status, or 1 after printing a user error.

  Args:
    main: the script's work; returns an exit status or None (0).
    args: parsed by a ``parser``.
    user_errors: more exception types that mean wrong input for this script.
  """
  # absl's own flags (absl logging, grain's worker processes read them) keep their defaults.
  from absl import flags

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  try:
    status = main(args)
  except USER_ERRORS + tuple(user_errors) as e:
    if args.verbose:
      raise
    print(f"error: {one_line(e)}", file=sys.stderr, flush=True)
    sys.unraisablehook = _without_closed_loop_noise
    return 1
  return 0 if status is None else status


def _without_closed_loop_noise(unraisable) -> None:
  """``sys.unraisablehook`` after a user error: drops asyncio's "Event loop is closed".

  A checkpoint read that failed part-way (a corrupt file) can leave Orbax's TensorStore
  callbacks in flight; when they land after the interpreter closed their event loop,
  Python prints the RuntimeError as a traceback at exit, under the one-line error the user
  is meant to read. Nothing is lost by dropping it; any other unraisable exception is
  still printed.
  """
  if isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(
      unraisable.exc_value
  ):
    return
  sys.__unraisablehook__(unraisable)


def one_line(error: BaseException) -> str:
  """The error's message on one line (library messages may hold a report's lines)."""
  if isinstance(error, OSError) and error.filename is not None and error.strerror:
    text = f"{error.filename}: {error.strerror}"
  else:
    text = str(error).strip("'\"") if isinstance(error, KeyError) else str(error)
  return re.sub(r"\s*\n\s*", " ", text.strip()) or type(error).__name__


# ----------------------------------------------------------------------------
# Paths.


def existing_folder(flag: str, path: str, what: str) -> str:
  """``path`` if it is a folder; else a ``UserError`` naming ``flag`` and ``what`` to give."""
  if not os.path.exists(path):
    raise UserError(f"{flag} {path}: no such folder; give {what}.")
  if not os.path.isdir(path):
    raise UserError(f"{flag} {path} is a file, not a folder; give {what}.")
  return path


def existing_file(flag: str, path: str, what: str) -> str:
  """``path`` if it is a file; else a ``UserError`` naming ``flag`` and ``what`` to give."""
  if not os.path.exists(path):
    raise UserError(f"{flag} {path}: no such file; give {what}.")
  if os.path.isdir(path):
    raise UserError(f"{flag} {path} is a folder, not a file; give {what}.")
  return path


def writable_folder(flag: str, path: str) -> str:
  """``path`` if it is a folder or can be created as one."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise UserError(f"{flag} {path} is a file; give a folder (it is created if missing).")
  return path


# ----------------------------------------------------------------------------
# Training configs.


def parse_config(path: str, overrides: Sequence[str]):
  """The ``ml_collections.ConfigDict`` of config file ``path`` with ``overrides`` applied.

  Args:
    path: a config file defining ``get_config()`` (``FILE:ARG`` passes ARG to it).
    overrides: ``--config.GROUP.FIELD=VALUE`` arguments. The config is locked: a field
      that does not exist is an error, not a new field.

  Raises:
    UserError: for a missing or broken file, an unknown field or a value of the wrong type.
  """
  from absl import flags
  from ml_collections import config_flags

  existing_file("--config", path.split(":")[0], "a config file such as configs/quick.py")
  bad = [o for o in overrides if not re.match(r"--config\.\w+(\.\w+)*=", o)]
  if bad:
    raise UserError(f"{bad[0]}: expected --config.GROUP.FIELD=VALUE (with '=').")
  argv = ["train.py", f"--config={path}", *overrides]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file(
      "config", None, "Training config file.", flag_values=values, lock_config=True, sys_argv=argv
  )
  try:
    values(argv)
  except flags.Error as e:  # a value of the wrong type, e.g. --config.train.num_steps=abc
    raise UserError(one_line(e)) from e
  except (KeyError, AttributeError) as e:  # a field that does not exist
    field = re.search(r'instead of "(\w+)"', str(e)) or re.search(r"(\w+)", str(e))
    field = field.group(1) if field else "?"
    hint = re.search(r'Did you mean "(\w+)"', str(e))
    given = next(
        (o.split("=")[0] for o in overrides if re.search(rf"\.{re.escape(field)}(=|\.)", o)), None
    )
    if given is None:  # not an override: the file itself, e.g. without get_config()
      raise UserError(f"--config {path} did not load: {type(e).__name__}: {one_line(e)}") from e
    raise UserError(
        f"{given}: the config has no field {field!r}"
        + (f"; did you mean {hint.group(1)!r}?" if hint else ".")
    ) from e
  except Exception as e:  # the file itself fails: a syntax error, a name error...
    raise UserError(f"--config {path} did not load: {type(e).__name__}: {one_line(e)}") from e
  try:
    return values.config
  except OSError as e:  # the file did not load (a syntax error, no get_config...)
    cause = e.__cause__ or e.__context__ or e
    raise UserError(f"--config {path} did not load: {one_line(cause)}") from e


# ----------------------------------------------------------------------------
# The model of evaluate.py and predict.py.

DECODE_METHODS = ("greedy", "beam", "lexicon")


def add_checkpoint_args(p: argparse.ArgumentParser, *, required: bool):
  """--workdir DIR or --checkpoint DIR, one of them (``required``): the training checkpoint
  to read. Returns their mutually exclusive group, for more ways to name a model."""
  where = p.add_mutually_exclusive_group(required=required)
  where.add_argument(
      "--workdir",
      metavar="DIR",
      help="a training workdir (its best checkpoint, else the latest)",
  )
  where.add_argument(
      "--checkpoint",
      metavar="DIR",
      help="a checkpoint folder (a workdir, its best/ or checkpoints/, or a step folder)",
  )
  return where


def add_model_args(p: argparse.ArgumentParser, *, batch_size: int) -> None:
  """The model to load and how to decode: --workdir, --checkpoint or --weights (default the
  pretrained model), --decode, --beam-size, --lexicon, --batch-size."""
  where = add_checkpoint_args(p, required=False)
  where.add_argument(
      "--weights",
      metavar="FILE",
      help="a weights file (scripts/"
      "export_weights.py). Default, when no model is given: the pretrained "
      "model shipped with crnn_jax, crnn_jax/pretrained/crnn_seed.npz",
  )
  p.add_argument(
      "--decode",
      choices=DECODE_METHODS,
      default=None,
      help="default: lexicon with --lexicon, beam with --top-k > 1, else greedy",
  )
  p.add_argument("--beam-size", type=int, default=8, help="beams for beam/lexicon decoding")
  p.add_argument(
      "--lexicon",
      metavar="FILE",
      help="a word list, one word per line: the " "output is always one of its words",
  )
  p.add_argument("--batch-size", type=int, default=batch_size, help="images per forward pass")


def check_model_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
  """Fills in ``args.decode`` and rejects option combinations that cannot work."""
  top_k = getattr(args, "top_k", 1)
  if args.decode is None:
    args.decode = "lexicon" if args.lexicon else ("beam" if top_k > 1 else "greedy")
  if args.decode == "lexicon" and not args.lexicon:
    p.error("--decode lexicon needs --lexicon FILE")
  if args.lexicon and args.decode != "lexicon":
    p.error(f"--lexicon is used only with --decode lexicon (got --decode {args.decode})")
  if args.decode == "greedy" and top_k > 1:
    p.error("--top-k > 1 needs --decode beam or lexicon")
  for name in ("beam_size", "batch_size") + (("top_k",) if hasattr(args, "top_k") else ()):
    if getattr(args, name) < 1:
      p.error(f"--{name.replace('_', '-')} must be at least 1; got {getattr(args, name)}")
  args.beam_size = max(args.beam_size, top_k)


def load_recognizer(args: argparse.Namespace, **options):
  """The ``Recognizer`` the model options name, with their decoding; says which on stderr.

  Args:
    args: parsed options of ``add_model_args`` (checked by ``check_model_args``).
    **options: more ``Recognizer`` keyword arguments (e.g. ``top_k``).

  Raises:
    UserError: for a path that does not exist or is of the wrong kind, and an empty lexicon
      file; the library's ValueError for a folder without a checkpoint or a bad file.
  """
  if args.workdir:
    existing_folder("--workdir", args.workdir, "the workdir of a training run")
  if args.checkpoint:
    existing_folder(
        "--checkpoint", args.checkpoint, "a workdir, its best/ or checkpoints/, " "or a step folder"
    )
  if args.weights:
    existing_file("--weights", args.weights, "a weights file from scripts/export_weights.py")
  lexicon = None
  if args.lexicon:
    existing_file("--lexicon", args.lexicon, "a word list, one word per line")
    with open(args.lexicon, encoding="utf-8") as f:
      lexicon = [line.strip() for line in f if line.strip()]
    if not lexicon:
      raise UserError(f"--lexicon {args.lexicon} holds no words; give one word per line.")
  from absl import logging

  logging.set_verbosity(logging.ERROR)  # Orbax reports read-only managers at WARNING
  from crnn_jax.recognizer import Recognizer

  options = dict(
      batch_size=args.batch_size,
      decode=args.decode,
      beam_size=args.beam_size,
      lexicon=lexicon,
      **options,
  )
  if args.workdir or args.checkpoint:
    recognizer = Recognizer.from_checkpoint(args.workdir or args.checkpoint, **options)
  else:
    recognizer = Recognizer.from_weights(args.weights or "pretrained", **options)
  print(f"model: {recognizer.checkpoint.describe()}", file=sys.stderr, flush=True)
  return recognizer

"""crnn_jax.cli and scripts/: one option style, and user errors as one line, not a traceback.

Cheap by design: --help and the path and config mistakes are answered before jax is
imported (checked with -X importtime); the two mistakes only the library can see run in
this process, where jax is loaded already.
"""

import argparse
import glob
import json
import os
import re
import subprocess
import sys

import pytest

from crnn_jax import cli, extras

from helpers import REPO, load_script

SCRIPTS = sorted(glob.glob(os.path.join(REPO, "scripts", "*.py")))
# The benchmark entry points (torch_crnn.py is the PyTorch peer model, not a command).
BENCHMARKS = sorted(
    p for p in glob.glob(os.path.join(REPO, "benchmarks", "*.py")) if "torch_crnn" not in p
)
_ENV = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)

# Runs every script's main(["--help"]) in one fresh process.
_HELP_ALL = """
import contextlib, importlib.util, io, json, os, sys
out = {}
for path in sys.argv[1:]:
  name = os.path.basename(path)
  spec = importlib.util.spec_from_file_location("script_" + name[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  text = io.StringIO()
  with contextlib.redirect_stdout(text):
    try:
      module.main(["--help"])
      code = None
    except SystemExit as e:
      code = e.code
  out[name] = [code, text.getvalue()]
print(json.dumps({"help": out, "jax_imported": "jax" in sys.modules}))
"""


def _help_texts(paths: list) -> dict:
  """{script name: [exit status, --help text]} and whether jax was imported, in one process."""
  done = subprocess.run(
      [sys.executable, "-c", _HELP_ALL, *paths],
      capture_output=True,
      text=True,
      cwd=REPO,
      env=_ENV,
      timeout=120,
  )
  assert done.returncode == 0, done.stderr
  result = json.loads(done.stdout)
  assert len(result["help"]) == len(paths)
  return result


def _assert_one_style(helps: dict):
  for name, (code, text) in helps.items():
    assert code == 0, name
    assert text.startswith(f"usage: {name} [-h] [--verbose]"), text[:200]
    options = set(re.findall(r"(?<![\w-])--[\w-]+(?:\.[\w-]+)*", text)) - {"--config.GROUP.FIELD"}
    odd = {
        o
        for o in options
        if not re.fullmatch(r"--[a-z0-9]+(-[a-z0-9]+)*", o) and not o.startswith("--config.")
    }
    assert not odd, (name, odd)


def test_every_script_shows_the_same_help_style():
  """Each script's --help exits 0 with argparse's usage line, hyphenated long options and
  --verbose, without importing jax. Breaks on an absl flag (--help exits 1 and spells
  --batch_size), a script outside cli.parser, or a heavy import before parsing."""
  result = _help_texts(SCRIPTS)
  assert not result["jax_imported"] and len(SCRIPTS) >= 8
  _assert_one_style(result["help"])


def test_benchmarks_show_the_same_help_style():
  """benchmarks/ parse their options as scripts/ do (they may import jax first)."""
  result = _help_texts(BENCHMARKS)
  assert len(BENCHMARKS) >= 4
  _assert_one_style(result["help"])


def _one_line_error(stderr: str) -> str:
  """The single non-importtime line of ``stderr``; fails on a traceback or more lines."""
  lines = [line for line in stderr.splitlines() if not line.startswith("import time:")]
  assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
  return lines[0]


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
  root = tmp_path_factory.mktemp("cli")
  (root / "a_file").write_text("not a folder")
  (root / "empty").mkdir()
  return root


# (script and arguments, what the line must say, exit status); {root} is a temporary folder.
PRE_JAX_MISTAKES = [
    (
        [
            "train.py",
            "--config",
            "configs/quick.py",
            "--workdir",
            "{root}/w",
            "--config.train.num_stesp=5",
        ],
        "--config.train.num_stesp: the config has no field 'num_stesp'; did you mean "
        "'num_steps'?",
        1,
    ),
    (
        ["train.py", "--config", "configs/quik.py", "--workdir", "{root}/w"],
        "--config configs/quik.py: no such file",
        1,
    ),
    (
        ["train.py", "--config", "configs/quick.py", "--workdir", "{root}/a_file"],
        "--workdir {root}/a_file is a file",
        1,
    ),
    (
        ["train.py", "--config", "configs/quick.py", "--workdir", "{root}/w", "--worker", "1"],
        "unrecognized arguments: --worker 1",
        2,
    ),
    (
        ["predict.py", "--workdir", "{root}/missing", "x.png"],
        "--workdir {root}/missing: no such folder; give the workdir of a training run.",
        1,
    ),
    (
        ["evaluate.py", "--workdir", "{root}/a_file", "--data", "synth:5"],
        "--workdir {root}/a_file is a file, not a folder",
        1,
    ),
    (
        ["evaluate.py", "--weights", "{root}/missing.npz", "--data", "synth:5"],
        "--weights {root}/missing.npz: no such file",
        1,
    ),
    (
        ["predict.py", "--lexicon", "{root}/missing.txt", "x.png"],
        "--lexicon {root}/missing.txt: no such file",
        1,
    ),
    (
        ["export.py", "--checkpoint", "{root}/missing", "--out", "{root}/e"],
        "--checkpoint {root}/missing: no such folder",
        1,
    ),
    (
        ["export_weights.py", "--workdir", "{root}/missing", "--out", "{root}/w.npz"],
        "--workdir {root}/missing: no such folder",
        1,
    ),
    (
        ["plot_curve.py", "--workdir", "{root}/empty"],
        "--workdir {root}/empty: no TensorBoard event files",
        1,
    ),
    (
        ["predict.py", "--decode", "greedy", "--top-k", "3", "x.png"],
        "--top-k > 1 needs --decode beam or lexicon",
        2,
    ),
]


@pytest.mark.parametrize(
    "argv,says,status", PRE_JAX_MISTAKES, ids=[f"{a[0]}:{s[:30]}" for a, s, _ in PRE_JAX_MISTAKES]
)
def test_user_errors_are_one_line_before_jax_loads(paths, argv, says, status):
  argv = [a.format(root=paths) for a in argv]
  done = subprocess.run(
      [sys.executable, "-X", "importtime", os.path.join(REPO, "scripts", argv[0]), *argv[1:]],
      capture_output=True,
      text=True,
      cwd=REPO,
      env=_ENV,
      timeout=60,
  )
  line = _one_line_error(done.stderr)
  assert says.format(root=paths) in line
  assert done.returncode == status
  assert not re.search(r"\|\s+jax$", done.stderr, re.MULTILINE)  # answered before jax


def test_a_workdir_without_checkpoint_is_one_line(paths, capsys):
  code = load_script("predict").main(["--workdir", str(paths / "empty"), "x.png"])
  line = _one_line_error(capsys.readouterr().err)
  assert code == 1
  assert line.startswith(f"error: No crnn_jax checkpoint found at '{paths / 'empty'}'")


def test_unusable_training_data_is_one_line(tmp_path, monkeypatch, capsys):
  """No image of the training folder exists: one line naming the data, not a traceback."""
  (tmp_path / "labels.tsv").write_text("a.png\tHELLO\nb.png\tWORLD\n")
  monkeypatch.setenv("CRNN_JAX_MALLOC", "system")  # leave this process's allocator alone
  code = load_script("train").main(
      [
          "--config",
          os.path.join(REPO, "configs", "quick.py"),
          "--workdir",
          str(tmp_path / "run"),
          f"--config.data.train=tsv:{tmp_path}",
          f"--config.data.eval=tsv:{tmp_path}",
          "--config.eval.batch_size=8",
      ]
  )
  line = _one_line_error(capsys.readouterr().err)
  assert code == 1
  assert line.startswith(f"error: data.train member 'tsv:{tmp_path}' has no usable example.")
  assert not (tmp_path / "run").exists()  # stopped before writing anything


def test_run_keeps_tracebacks_for_bugs_and_with_verbose(capsys):
  quiet = argparse.Namespace(verbose=False)

  def missing_extra(args):
    raise extras.MissingExtraError("the synth: data spec needs the [synth] extra")

  assert cli.run(missing_extra, quiet) == 1
  assert capsys.readouterr().err == "error: the synth: data spec needs the [synth] extra\n"

  def bug(args):
    return {}["oops"]

  with pytest.raises(KeyError):  # not a user error: the traceback stays
    cli.run(bug, quiet)
  with pytest.raises(extras.MissingExtraError):
    cli.run(missing_extra, argparse.Namespace(verbose=True))
  assert cli.run(lambda args: None, quiet) == 0 and cli.run(lambda args: 3, quiet) == 3


def test_make_dataset_command_line_builds_what_it_prints(tmp_path, capsys):
  """scripts/make_dataset.py end to end: the spec it prints reads back the rendered words
  of that seed, in order, and the contact sheet is written.

  Breaks if an option is not passed on (the seed, difficulty or counts), if the printed
  spec names another dataset or folder, or if the sheet is missing.
  """
  from PIL import Image

  from crnn_jax.data import render, specs

  argv = ["--num", "12", "--num-validation", "4", "--seed", "5", "--difficulty", "0"]
  argv += ["--num-workers", "0", "--data-dir", str(tmp_path)]
  assert load_script("make_dataset").main(argv) in (0, None)
  out = capsys.readouterr().out
  train_spec = re.search(r"--config\.data\.train=(\S+)", out).group(1)
  eval_spec = re.search(r"--config\.data\.eval=(\S+)", out).group(1)
  assert train_spec == f"tfds:synth_words/n12_v4_s5_d0_h32:train,data_dir={tmp_path}", out
  renderer = render.Renderer(seed=5, height=32, difficulty=0.0)
  source = specs.open_source(train_spec)
  assert len(source) == 12 and len(specs.open_source(eval_spec)) == 4
  assert [source.read(i)[1] for i in range(12)] == [renderer.render(i)[1] for i in range(12)]
  sheet = re.search(r"contact sheet: (\S+)", out).group(1)
  assert Image.open(sheet).size[0] == 4 * 300  # four columns of 300 pixels

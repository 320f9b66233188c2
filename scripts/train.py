"""Train a CRNN: python scripts/train.py --config configs/base.py --workdir DIR.

Override any config field with --config.GROUP.FIELD=VALUE (e.g.
--config.train.num_steps=100); a field that does not exist is an error. Re-running with
the same --workdir resumes.

Multi-process: on TPU pods, SLURM and Open MPI the processes find each other;
elsewhere pass --coordinator-address HOST:PORT --num-processes N --process-id I
to each process (see the README).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Before anything starts threads: keep freed memory for the next step (about 20% less CPU
# per training step on CPU; CRNN_JAX_MALLOC=system turns it off). See crnn_jax/memory.py.
from crnn_jax import memory  # noqa: E402

memory.reuse_freed_memory()

from crnn_jax import cli  # noqa: E402


def parse_args(argv=None):
  p = cli.parser(__doc__, __file__)
  p.add_argument(
      "--config",
      required=True,
      metavar="FILE",
      help="training config, e.g. configs/quick.py; then any number of "
      "--config.GROUP.FIELD=VALUE overrides",
  )
  p.add_argument("--workdir", required=True, metavar="DIR", help="where checkpoints and logs go")
  p.add_argument(
      "--coordinator-address",
      metavar="HOST:PORT",
      help="process 0's address, for a multi-process run",
  )
  p.add_argument("--num-processes", type=int, metavar="N", help="processes in the run")
  p.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0-based")
  p.add_argument(
      "--num-cpu-devices",
      type=int,
      metavar="N",
      help="on CPU, split each process into this many JAX devices",
  )
  p.add_argument(
      "--heartbeat-timeout",
      type=int,
      default=30,
      metavar="SECONDS",
      help="seconds before a silent process counts as dead and the others stop " "with an error",
  )
  args, rest = p.parse_known_args(argv)
  args.overrides = [a for a in rest if a.startswith("--config.")]
  unknown = [a for a in rest if not a.startswith("--config.")]
  if unknown:
    p.error(f"unrecognized arguments: {' '.join(unknown)}")
  return args


def train(args) -> None:
  config = cli.parse_config(args.config, args.overrides)
  cli.writable_folder("--workdir", args.workdir)
  from absl import logging

  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
  from crnn_jax import distributed, nonfinite
  from crnn_jax import train as train_lib

  distributed.initialize(
      args.coordinator_address,
      args.num_processes,
      args.process_id,
      num_cpu_devices=args.num_cpu_devices,
      heartbeat_timeout_seconds=args.heartbeat_timeout,
  )
  distributed.check_agreement(config)
  try:
    train_lib.train_and_evaluate(config, args.workdir)
  except nonfinite.NonFiniteError as e:  # diverged: the message names the settings to change
    raise cli.UserError(str(e)) from e


def main(argv=None) -> int:
  return cli.run(train, parse_args(argv))


if __name__ == "__main__":
  sys.exit(main())

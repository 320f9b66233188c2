"""Stage 3 of the pretrained model: stage 2's final export (the weights shipped in commit
90d42b8) trained on, with a fresh stream of rendered words and a second, lower cosine.

Stage 2's validation accuracy was still rising at its last step (IC15-val 0.42 -> 0.48,
SVT-val 0.62 -> 0.64 over its last 1,500 steps; docs/pretrained.md), short of the
IC15-val 0.50 and SVT-val 0.65 goals. Stage 3 starts from stage 2's parameters and
BatchNorm statistics (Adam's moments start fresh, hence the warmup) and keeps the recipe:
configs/pretrain.py's mixture, augmentation, width buckets and validation splits; the
rendered words and the data order use seed 2, so no earlier batch is replayed.

Run (niced, in the background, resumable like any run):
  git show 90d42b8:crnn_jax/pretrained/crnn_seed.npz > /tmp/stage2.npz
  CRNN_PRETRAIN_STAGE2=/tmp/stage2.npz nice -n 19 python scripts/train.py \\
      --config configs/pretrain_stage3.py --workdir ~/runs/pretrain_stage3
"""

import os

from configs import pretrain

# Where the stage-2 weights file is (see above for how to get it).
_STAGE2 = os.environ.get("CRNN_PRETRAIN_STAGE2", "")


def get_config():
  if not _STAGE2:
    raise ValueError(
        "configs/pretrain_stage3.py continues from the stage-2 weights: set "
        "CRNN_PRETRAIN_STAGE2 to that file (git show "
        "90d42b8:crnn_jax/pretrained/crnn_seed.npz > /tmp/stage2.npz)."
    )
  config = pretrain.get_config()
  config.init_from = _STAGE2
  config.data.train = config.data.train.replace("synth:inf,seed=0", "synth:inf,seed=2")
  config.train.seed = 2
  # Half of stage 2's peak: the model is past its fast-learning phase.
  config.optim.learning_rate = 5e-4
  config.optim.warmup_steps = 100
  # 1,000 steps (64,000 images, about 35 minutes on an idle 2-core CPU): what one working
  # session leaves it.
  config.train.num_steps = 1_000
  return config

"""Stage 2 of the shipped pretrained model: configs/pretrain.py continued from its
step-3,000 export, on a fresh stream of rendered words.

Stage 1 (configs/pretrain.py, 3,000 steps of 64) ran in one session; its workdir did not
survive to the next, only its exported weights did (commit 5a6c4c4,
crnn_jax/pretrained/crnn_seed.npz: embedded digest c71b7225..., sha256sum of the
file 24422ad0...). Stage 2 starts from those weights
(parameters and BatchNorm statistics; Adam's moments start fresh, hence the short warmup)
and decays the learning rate to the end. The data mixture, augmentation, width buckets and
validation splits are stage 1's; the rendered words and the data order use seed 1, so
stage 2 does not replay stage 1's batches.

Run (niced, in the background, resumable like any run):
  git show 5a6c4c4:crnn_jax/pretrained/crnn_seed.npz > /tmp/stage1.npz
  CRNN_PRETRAIN_STAGE1=/tmp/stage1.npz nice -n 19 python scripts/train.py \\
      --config configs/pretrain_stage2.py --workdir ~/runs/pretrain_stage2
"""

import os

from configs import pretrain

# Where the stage-1 weights file is (see above for how to get it).
_STAGE1 = os.environ.get("CRNN_PRETRAIN_STAGE1", "")


def get_config():
  if not _STAGE1:
    raise ValueError(
        "configs/pretrain_stage2.py continues from the stage-1 weights: set "
        "CRNN_PRETRAIN_STAGE1 to that file (git show "
        "5a6c4c4:crnn_jax/pretrained/crnn_seed.npz > /tmp/stage1.npz)."
    )
  config = pretrain.get_config()
  config.init_from = _STAGE1
  config.data.train = config.data.train.replace("synth:inf,seed=0", "synth:inf,seed=1")
  config.train.seed = 1
  # Stage 1's cosine was at ~0.9e-3 at step 3,000; stage 2 warms Adam's fresh moments
  # up to that and decays to 1% of it.
  config.optim.learning_rate = 9e-4
  config.optim.warmup_steps = 200
  # Planned 4,000; shortened to 3,500 at step 2,250 (the learning rate stepped from 4.0e-4
  # down to the shorter cosine's 2.8e-4) so that the run ended inside its session.
  config.train.num_steps = 3_500
  return config

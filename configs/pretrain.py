"""The shipped pretrained model's recipe: the seed network on rendered words mixed with
real word crops, checked on real validation splits that it never trains on.

Run (hours on a 2-core CPU; niced, in the background, resumable):
  nice -n 19 python scripts/train.py --config configs/pretrain.py --workdir ~/runs/pretrain

The model is configs/base.py's exactly (6,617,663 parameters + 2,048 BatchNorm
statistics, 62 characters, height 32). Training data, sampled per row by weight:
an endless stream of rendered words (difficulty 1) and the real training crops of
IIIT5K, ICDAR 2015 and SVT from ../shared/data/real, minus the validation splits listed
in configs/splits/ (500 IIIT5K, 500 IC15 crops; all 257 SVT crops are validation).
Augmentation applies to every row, real or rendered. The three validation sets are
evaluated separately; the best checkpoint is picked by their mean word accuracy.
docs/pretrained.md has what a run reached.

``CRNN_REAL_DATA`` points at another copy of the real crops (default ../shared/data/real,
relative to the repository root, where the command runs).
"""

import os

from configs import base

_REAL = os.environ.get("CRNN_REAL_DATA", "../shared/data/real")
_SPLITS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "splits")


def real_spec(name: str, option: str, split: str) -> str:
  return f"tsv:{_REAL}/{name},{option}={_SPLITS}/{split}.txt"


def get_config():
  config = base.get_config()
  config.data.train = " | ".join(
      [
          "synth:inf,seed=0,difficulty=1 @ 0.55",
          real_spec("iiit5k_train", "exclude", "iiit5k_val") + " @ 0.2",
          real_spec("ic15_train", "exclude", "ic15_val") + " @ 0.25",
      ]
  )
  config.data.eval = " | ".join(
      [
          real_spec("iiit5k_train", "include", "iiit5k_val"),
          real_spec("ic15_train", "include", "ic15_val"),
          real_spec("svt_train", "include", "svt_val"),
      ]
  )
  # Real crops at height 32 are 35-165 pixels wide (10th-95th percentile).
  config.data.width_buckets = (64, 128, 192)
  config.data.augment = 0.5
  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 1000
  config.optim.schedule = "cosine"
  config.optim.grad_clip_norm = 5.0
  # 12k steps of 64: ~770k images, about 5 hours at the seed network's ~45 images/s.
  config.train.num_steps = 12_000
  config.train.batch_size = 64
  config.train.log_every_steps = 50
  config.eval.every_steps = 500
  config.eval.batch_size = 128
  config.checkpoint.every_steps = 250
  return config

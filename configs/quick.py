"""A quick CPU run: the seed's code path with a slimmer model, minutes on 2 cores.

Run (the README's main command does this in a fresh virtualenv):
  python scripts/train.py --config configs/quick.py --workdir runs/quick

It renders its own 20k words, trains 1,000 steps of 32, and ends by printing
validation word accuracy and sample predictions. Same layers as the seed,
narrower channels and one smaller BiLSTM; clean renderings (difficulty 0) so
learning shows within minutes. Measured on the 2-core CPU with another job
using about one core: 1,200 steps took 11.6 minutes in all and reached 81% word
accuracy (64% at step 800); 1,000 steps keep it under 10 minutes.
"""

from configs import base


def get_config():
  config = base.get_config()
  config.model.conv_features = (32, 64, 96, 96, 128, 128, 128)
  config.model.lstm_hidden = 96
  config.model.lstm_layers = 1
  config.data.train = "synth:20000,seed=0,difficulty=0"
  config.data.eval = "synth:1000,seed=1,difficulty=0"
  config.data.width_buckets = (64, 128, 192)
  config.optim.learning_rate = 2e-3
  config.optim.warmup_steps = 100
  config.optim.schedule = "cosine"
  config.optim.grad_clip_norm = 5.0
  config.train.num_steps = 1000
  config.train.batch_size = 32
  config.eval.every_steps = 500
  config.eval.batch_size = 256
  config.checkpoint.every_steps = 500
  return config

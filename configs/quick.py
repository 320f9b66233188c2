"""A quick CPU run: the seed's code path with a slimmer model, minutes on 2 cores.

Run (the README's main command does this in a fresh virtualenv):
  python scripts/train.py --config configs/quick.py --workdir runs/quick

It renders its own 20k words, trains 2,000 steps of 32, and ends by printing
validation word accuracy and sample predictions. Same layers as the seed,
narrower channels and one smaller BiLSTM; clean renderings (difficulty 0) so
learning shows within minutes. Measured on the idle 2-core CPU: 7.6 minutes in
all, 86.9% word accuracy at step 2,000 (68.6% at step 1,000). It was 1,000 steps
until the CPU fast path (docs/speed.md) sped training up.
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
  config.train.num_steps = 2000
  config.train.batch_size = 32
  config.eval.every_steps = 500
  config.eval.batch_size = 256
  config.checkpoint.every_steps = 500
  return config

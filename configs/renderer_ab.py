"""The renderer study's fixed budget: rendered words only, judged on the real validation
crops (docs/pretrained.md, "Renderer realism, measured").

Each arm trains the quick model (configs/quick.py's network) for 1,000 steps of 32 on an
endless stream of rendered words at difficulty 1 with the pretraining recipe's
augmentation, and is evaluated on the three validation splits of configs/pretrain.py. Arms
differ only in the renderer options of the training spec:
  python scripts/train.py --config configs/renderer_ab.py --workdir ~/runs/ab_base
  python scripts/train.py --config configs/renderer_ab.py --workdir ~/runs/ab_soft \\
      --config.data.train=synth:inf,seed=0,difficulty=1,soft=0.3
A change is kept only if it raises the mean validation accuracy at equal steps.
"""

from configs import pretrain
from configs import quick


def get_config():
  config = pretrain.get_config()
  slim = quick.get_config().model
  config.model.conv_features = slim.conv_features
  config.model.lstm_hidden = slim.lstm_hidden
  config.model.lstm_layers = slim.lstm_layers
  config.data.train = "synth:inf,seed=0,difficulty=1"
  config.optim.learning_rate = 2e-3
  config.optim.warmup_steps = 100
  config.train.num_steps = 1_000
  config.train.batch_size = 32
  config.eval.every_steps = 1_000
  config.checkpoint.every_steps = 250
  return config

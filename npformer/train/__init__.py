"""Training: the optimizers, learning-rate schedules, checkpoints, the training loop, and scripts' flags."""

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .optim import SGD, AdamW, clip_grad_norm, grad_norm, param_groups, scale_grads
from .schedules import constant, inverse_sqrt, linear_warmup_linear_decay, schedule_from_dict, warmup_cosine
from .trainer import Trainer, TrainingDiverged

__all__ = ["SGD", "AdamW", "Checkpoint", "CheckpointError", "TrainConfig", "Trainer", "TrainingDiverged",
           "clip_grad_norm", "constant", "grad_norm", "inverse_sqrt", "linear_warmup_linear_decay", "load_checkpoint",
           "param_groups", "schedule_from_dict",
           "save_checkpoint", "scale_grads", "warmup_cosine"]

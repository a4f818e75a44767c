"""Training: ``train(pipeline, model_dir, ...)`` and ``python -m detbench.train``."""

from detbench.train.fine_tune import FineTuneError, FineTuneReport, restore_matching_variables
from detbench.train.optimizers import build_learning_rate, build_optimizer, learning_rate_at
from detbench.train.trainer import (
    NonFiniteLossError,
    TrainError,
    TrainResult,
    make_strategy,
    make_train_step,
    replica_strategy,
    train,
)

__all__ = [
    "train",
    "TrainResult",
    "TrainError",
    "NonFiniteLossError",
    "make_strategy",
    "make_train_step",
    "replica_strategy",
    "build_optimizer",
    "build_learning_rate",
    "learning_rate_at",
    "restore_matching_variables",
    "FineTuneReport",
    "FineTuneError",
]

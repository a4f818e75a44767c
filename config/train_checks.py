"""Checks of ``train_config`` (optimizer, learning-rate schedule, counts): one place.

The trainer and ``train.optimizers`` call these before building anything, and
``check_pipeline`` (hence ``python -m detbench.config validate`` and every
command that loads a pipeline) calls them too: what training refuses, validation
refuses. No TensorFlow here.
"""

from detbench.errors import ConfigError

OPTIMIZER_FIELD = "train_config.optimizer"


def check_learning_rate(lr_proto, num_steps, field=OPTIMIZER_FIELD + ".learning_rate"):
    """``num_steps`` None: unknown yet (a cosine schedule's default length is not checked)."""
    which = lr_proto.WhichOneof("schedule") or "constant"
    warmup = lr_proto.warmup_steps
    if warmup < 0:
        raise ConfigError(f"{field}.warmup_steps must be >= 0, got {warmup}")
    cfg = getattr(lr_proto, which)
    if which == "step":
        boundaries, values = list(cfg.boundaries), list(cfg.values)
        if len(boundaries) != len(values):
            raise ConfigError(
                f"{field}.step: {len(boundaries)} boundaries need as many values, got {len(values)}"
            )
        if any(b <= 0 for b in boundaries) or any(
            b2 <= b1 for b1, b2 in zip(boundaries, boundaries[1:])
        ):
            raise ConfigError(
                f"{field}.step.boundaries must be positive and increasing, got {boundaries}"
            )
    if which == "cosine":
        # total_steps 0 means num_steps; a run shorter than the warm-up shortens the
        # warm-up (train.optimizers), so only an explicit total_steps can be too short
        if cfg.total_steps and cfg.total_steps <= warmup:
            raise ConfigError(
                f"{field}.cosine.total_steps ({cfg.total_steps}) must be greater "
                f"than warmup_steps ({warmup})"
            )
        if not 0.0 <= cfg.alpha <= 1.0:
            raise ConfigError(f"{field}.cosine.alpha must be in [0, 1], got {cfg.alpha:.6g}")
    if cfg.learning_rate <= 0:
        raise ConfigError(f"{field}.{which}.learning_rate must be > 0, got {cfg.learning_rate:.6g}")


def check_optimizer(optimizer_proto, num_steps):
    which = optimizer_proto.WhichOneof("optimizer") or "momentum"
    cfg = getattr(optimizer_proto, which)
    check_learning_rate(
        cfg.learning_rate, num_steps, field=f"{OPTIMIZER_FIELD}.{which}.learning_rate"
    )
    if which == "momentum" and not 0.0 <= cfg.momentum < 1.0:
        raise ConfigError(
            f"{OPTIMIZER_FIELD}.momentum.momentum must be in [0, 1), got {cfg.momentum:.6g}"
        )
    if which == "rms_prop":
        if cfg.epsilon <= 0:
            raise ConfigError(
                f"{OPTIMIZER_FIELD}.rms_prop.epsilon must be > 0, got {cfg.epsilon:.6g}"
            )


def check_train_config(tc, num_steps=None):
    """``num_steps``: the steps a training will run (None: ``tc.num_steps`` if set, else
    unknown: a run may give them on the command line)."""
    steps = tc.num_steps if num_steps is None else int(num_steps)
    if num_steps is not None and steps <= 0:
        raise ConfigError(f"train_config.num_steps must be > 0, got {steps}")
    if steps < 0:
        raise ConfigError(f"train_config.num_steps: must not be negative, got {steps}")
    if tc.batch_size <= 0:
        raise ConfigError(f"train_config.batch_size must be > 0, got {tc.batch_size}")
    for field in ("checkpoint_every_n_steps", "log_every_n_steps", "eval_every_n_steps"):
        if getattr(tc, field) < 0:
            raise ConfigError(f"train_config.{field} must be >= 0, got {getattr(tc, field)}")
    check_optimizer(tc.optimizer, steps or None)

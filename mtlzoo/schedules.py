"""Learning-rate schedules a recipe names in its `optimizer` mapping, made with Keras's own schedules."""

from __future__ import annotations

import warnings

#: Keys of a recipe's `optimizer` that describe its learning-rate schedule (not passed to the Keras optimizer).
SCHEDULE_KEYS = ("schedule", "warmup", "final_lr_fraction", "decay_steps")


def learning_rate_schedule(learning_rate, schedule: dict, total_steps=None, where="optimizer"):
    """A Keras learning-rate schedule: linear warm-up from 0, then cosine decay (`keras.optimizers.schedules.CosineDecay`).

    Args:
        learning_rate: float. The peak learning rate.
        schedule: dict with `schedule` ("cosine"), `warmup` (a fraction of the steps in [0, 1), or a number of
            steps), `final_lr_fraction` (the end of the decay as a fraction of the peak, default 0) and
            `decay_steps` (total steps; else `total_steps`).
        total_steps: int or None. Training steps, when `decay_steps` is not given.
        where: str. Names the setting in error messages.

    Returns:
        A `CosineDecay` schedule, or `learning_rate` unchanged (with a warning) when the number of steps is unknown.

    Raises:
        ValueError: an unknown schedule or a bad value, naming the key.

    Example:
    ```python
    from mtlzoo.schedules import learning_rate_schedule
    lr = learning_rate_schedule(2e-3, {"schedule": "cosine", "warmup": 0.05}, total_steps=1000)
    ```

    Reference:
        Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017; Goyal et al.,
        "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", 2017 (warm-up).
    """
    import keras

    if schedule.get("schedule") != "cosine":
        raise ValueError(f"{where}.schedule must be 'cosine' or null, got {schedule.get('schedule')!r}.")
    steps = schedule.get("decay_steps") or total_steps
    if steps is None:
        warnings.warn(f"{where}: schedule 'cosine' needs the number of training steps; this model keeps the "
                      f"constant learning rate {learning_rate}. Train with mtlzoo.train (which knows the steps) "
                      "or set optimizer.decay_steps.", stacklevel=4)
        return learning_rate
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{where}.decay_steps must be an int >= 1, got {steps!r}.")
    warmup = schedule.get("warmup", 0)
    if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or warmup < 0:
        raise ValueError(f"{where}.warmup must be a fraction of the steps in [0, 1) or a number of steps, "
                         f"got {warmup!r}.")
    warmup_steps = min(int(round(warmup * steps)) if warmup < 1 else int(warmup), steps - 1)
    final = schedule.get("final_lr_fraction", 0.0)
    if isinstance(final, bool) or not isinstance(final, (int, float)) or not 0.0 <= final <= 1.0:
        raise ValueError(f"{where}.final_lr_fraction must be in [0, 1], got {final!r}.")
    peak = float(learning_rate)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else peak, decay_steps=steps - warmup_steps, alpha=float(final),
        warmup_target=peak if warmup_steps else None, warmup_steps=warmup_steps)

"""Dynamic Weight Average (DWA)."""

from __future__ import annotations

import keras
import numpy as np

from mtlzoo.registry import WEIGHTINGS
from mtlzoo.weighting.base import LossWeighting, check_float


def dwa_weights(previous, before_previous, temperature=2.0):
    """DWA weights from two epochs of mean task losses.

    `λ_k = K · exp(w_k / T) / Σ_i exp(w_i / T)` with `w_k = L_k(t−1) / L_k(t−2)`.

    Args:
        previous: array [K]. Mean task losses of the last epoch, L(t−1).
        before_previous: array [K]. Those of the epoch before, L(t−2).
        temperature: float > 0. T.

    Returns:
        numpy float64 array [K] of weights summing to K.
    """
    ratio = np.asarray(previous, np.float64) / np.asarray(before_previous, np.float64)
    z = ratio / temperature
    e = np.exp(z - z.max())
    return len(ratio) * e / e.sum()


@WEIGHTINGS.register("dwa")
class DWA(LossWeighting):
    """Dynamic Weight Average: weight tasks by the rate at which their loss falls.

    At the end of epoch t−1 the weights for epoch t become
    `λ_k(t) = K · softmax_k(w(t−1) / T)` with `w_k(t−1) = L_k(t−1) / L_k(t−2)`,
    where `L_k` is task k's epoch-mean loss read from the epoch logs
    (`{task}_loss`, unweighted). A task whose loss falls slowly (ratio near or
    above 1) gets a larger weight. The weights are 1 for the first two epochs
    (no ratio yet). The weights sum to K.

    An epoch whose monitored losses are not all finite and positive is
    skipped (weights kept, warning); the loss history persists across `fit`
    calls with the same callback.

    Args:
        temperature: float > 0. T; larger values give more uniform weights.
            Defaults to 2.0 (the paper's value).
        loss_key: str. Log key of a task's loss, with `{task}` in it.
            Defaults to "{task}_loss" (training loss); "val_{task}_loss"
            uses the validation loss.

    Example:
    ```python
    import mtlzoo.weighting
    cb = mtlzoo.weighting.get("dwa", temperature=2.0)
    model.fit(train, epochs=20, callbacks=[cb])
    ```

    Reference:
        Liu, Johns, Davison, "End-to-End Multi-Task Learning with Attention",
        CVPR 2019 (Eq. 7).
    """

    name = "dwa"

    def __init__(self, temperature=2.0, loss_key="{task}_loss"):
        super().__init__()
        self.temperature = check_float("DWA", "temperature", temperature, low=0.0, low_open=True)
        if not isinstance(loss_key, str) or "{task}" not in loss_key:
            raise ValueError(f"DWA: loss_key must be a string containing '{{task}}', got {loss_key!r}.")
        self.loss_key = loss_key
        self._history = None
        self._seen = None

    def build(self, model):
        # Variables, so the history is saved with a model built with this weighting.
        k = len(model.task_names)
        self._history = keras.Variable(np.zeros((2, k), np.float32), trainable=False, name="dwa_loss_history")
        self._seen = keras.Variable(0.0, trainable=False, name="dwa_epochs_seen")

    @property
    def loss_history(self) -> list:
        """The last (up to two) epochs' per-task losses, oldest first."""
        if self._history is None:
            return []
        n = int(min(2, float(self._seen.numpy())))
        rows = np.asarray(self._history.numpy(), float)
        return [r.tolist() for r in rows[2 - n:]]

    def begin(self, model):
        if len(self.loss_history) < 2:
            self.assign_weights({t: 1.0 for t in model.task_names})

    def epoch_update(self, epoch, logs):
        losses = self._read_losses(logs, self.loss_key)
        if losses is None:
            return None
        rows = np.asarray(self._history.numpy())
        self._history.assign(np.stack([rows[1], losses.astype(np.float32)]))
        self._seen.assign(float(self._seen.numpy()) + 1.0)
        history = self.loss_history
        if len(history) == 2:
            self.assign_weights(dwa_weights(history[1], history[0], self.temperature))
        return None

"""Uncertainty weighting with learned homoscedastic task variances."""

from __future__ import annotations

import tensorflow as tf

from mtlzoo.registry import WEIGHTINGS
from mtlzoo.weighting.learned import LearnedScalarWeighting


@WEIGHTINGS.register("uncertainty", aliases=("uw",))
class UncertaintyWeighting(LearnedScalarWeighting):
    """Uncertainty weighting: each task loss scaled by a learned inverse variance.

    With learnable log-variances `s_k = log σ_k²`, the total loss is

        Σ_k ½·e^{−s_k}·L_k + ½·s_k

    (the Gaussian negative log-likelihood form of the paper, used here for
    every task kind; the paper's classification variant drops the ½ on the
    first term). The effective weight of task k is `½·e^{−s_k}`, written into
    `model.loss_weights` and logged as `{task}_weight`. For a regression task
    with a mean-squared-error loss the optimum is `e^{s_k} = L_k`, so the
    learned `σ_k = e^{s_k/2}` estimates the residual standard deviation.

    Initialisation: `s_k = 0` (σ = 1, weights ½). The `s_k` are trained with
    the network by the model's optimizer when the model owns them
    (`MultiTaskModel(..., learned_loss_params=True)`, saved in `.keras` files);
    see `LearnedScalarWeighting` for the fallback. A task with no label in a
    batch (loss exactly 0) contributes neither term, so its `s_k` does not
    drift. A non-finite loss makes the model skip the step, so `s_k` is not
    changed.

    Args:
        learning_rate: float > 0 or None. Only for the fallback where the
            callback owns the `s_k`: its Adam learning rate (None: the model
            optimizer's). Defaults to None.

    Example:
    ```python
    import mtlzoo.weighting
    cb = mtlzoo.weighting.get("uncertainty")
    model.fit(x, y, epochs=10, callbacks=[cb])
    cb.sigmas()    # {task: learned σ_k}
    ```

    Reference:
        Kendall, Gal, Cipolla, "Multi-Task Learning Using Uncertainty to Weigh
        Losses for Scene Geometry and Semantics", CVPR 2018 (Eq. 7).
    """

    name = "uncertainty"

    def effective_weights(self, s):
        return 0.5 * tf.exp(-s)

    def objective(self, s, losses):
        return 0.5 * tf.exp(-s) * losses + 0.5 * s

    def sigmas(self) -> dict:
        """dict task -> learned standard deviation σ_k = e^{s_k/2}."""
        import math

        return {t: math.exp(0.5 * v) for t, v in self.scalars.items()}

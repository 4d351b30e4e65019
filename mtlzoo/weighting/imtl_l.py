"""IMTL-L: loss balancing with learned loss scales."""

from __future__ import annotations

import tensorflow as tf

from mtlzoo.registry import WEIGHTINGS
from mtlzoo.weighting.learned import LearnedScalarWeighting


@WEIGHTINGS.register("imtl_l")
class IMTLL(LearnedScalarWeighting):
    """IMTL-L: learn a scale per task so that every scaled loss stays at 1.

    With learnable `s_t`, the total loss is `Σ_t e^{s_t}·L_t − s_t`. Its
    minimum in `s_t` is at `e^{s_t}·L_t = 1`, so the scaled losses are
    balanced (all equal to 1) whatever the raw loss scales. The effective
    weight `e^{s_t}` is written into `model.loss_weights` and logged as
    `{task}_weight`. Initialisation `s_t = 0` (weights 1). Storage, training
    and missing-label handling as in `UncertaintyWeighting`.

    Args:
        learning_rate: float > 0 or None. Only for the fallback where the
            callback owns the `s_t`: its Adam learning rate (None: the model
            optimizer's). Defaults to None.

    Example:
    ```python
    import mtlzoo.weighting
    cb = mtlzoo.weighting.get("imtl_l")
    model.fit(x, y, epochs=10, callbacks=[cb])
    ```

    Reference:
        Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang, "Towards Impartial
        Multi-task Learning", ICLR 2021 (Sec. 3.1, loss balance).
    """

    name = "imtl_l"

    def effective_weights(self, s):
        return tf.exp(s)

    def objective(self, s, losses):
        return tf.exp(s) * losses - s

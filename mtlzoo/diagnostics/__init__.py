"""Negative-transfer diagnostics: gradient conflict, task affinity, and a report.

Two Keras callbacks measure, at epoch ends and on a few sampled batches (not
at every step), how the tasks of a `mtlzoo.MultiTaskModel` interact through
their shared parameters:

- `GradientConflictMonitor`: each task's gradient norm on the shared
  parameters and the pairwise cosine similarity of the task gradients; how
  often (fraction of sampled steps with cosine < 0) and how strongly tasks
  conflict.
- `TaskAffinity`: lookahead inter-task affinity (Fifty et al., 2021),
  `Z_{i→j} = 1 − L_j(θ_s − η∇_{θ_s}L_i) / L_j(θ_s)`: does a step on task i's
  loss lower (Z > 0) or raise (Z < 0) task j's loss?

Both write their numbers into the epoch `logs` under keys that CSVLogger and
TensorBoard accept (`{task}_grad_norm`, `cos_{a}_{b}`, `conflict_{a}_{b}`,
`affinity_{i}_{j}`) and keep them as matrices. `diagnose(recipe, out_dir)`
trains a recipe briefly with both and saves a report folder (heatmaps, loss
weight trajectories, JSON, a plain-language reading); `run_diagnose(args)`
is the body of the `mtlzoo diagnose RECIPE` command.

```python
from mtlzoo.diagnostics import GradientConflictMonitor, TaskAffinity, diagnose
monitor = GradientConflictMonitor(data=(x_val, y_val), num_batches=4)
affinity = TaskAffinity(data=(x_val, y_val), interval=1)
model.fit(x, y, epochs=5, callbacks=[monitor, affinity])
monitor.summary()["conflict_fraction"], affinity.matrix
report = diagnose("tabular_demo", "diag_out", epochs=3, steps=20)
```

Conventions: the probes run the model with `training=True` by default
(BatchNorm in batch mode, dropout on, like the train step) and restore every
non-trainable variable afterwards, so a diagnostic never changes the model
(BatchNorm statistics, loss weights) or the optimizer. Gradients are those of
the unweighted task losses `L_t` (`weighted=True`: of `w_t·L_t`) with respect
to the shared trainable parameters (`model.variable_groups()[0]`). A task
with no label in a sampled batch has no gradient there and is left out of
that batch's cosines (and of the affinities involving it).
"""

from mtlzoo.diagnostics.affinity import TaskAffinity
from mtlzoo.diagnostics.conflict import GradientConflictMonitor
from mtlzoo.diagnostics.probes import gradient_statistics
from mtlzoo.diagnostics.report import diagnose, run_diagnose, synthetic_data
from mtlzoo.diagnostics.situations import situations

__all__ = ["GradientConflictMonitor", "TaskAffinity", "diagnose", "gradient_statistics", "run_diagnose",
           "situations", "synthetic_data"]

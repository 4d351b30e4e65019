"""Hyperparameter search for multi-task recipes with keras-tuner.

`tune(recipe, ...)` searches per-task loss weights (and optionally the
loss-weighting method with its hyperparameters, the gradient aggregator and
the sharing mode) with any keras-tuner tuner, and judges each trial by a
multi-task quality measure rather than by the weighted training loss (which
the loss weights themselves change):

- `val_norm_loss` (default): the mean over tasks of the validation loss
  divided by a per-task reference. The reference is, by default, the
  validation loss of the *freshly initialised* model (`norm_reference=
  "initial"`: the recipe's seed fixes the initial weights, so every trial of
  the same architecture shares it, in every worker process); the trial's own
  first-epoch value (`"first_epoch"`) or a fixed dict are the alternatives.
  Lower is better.
- `val_delta_m`: Δm (`mtlzoo.metrics.delta_m`, percent, lower is
  better) of the validation metrics against single-task baselines given as
  `baselines={task: {metric: value}}`.
- any other logged name (`"val_segmentation_miou"`, ...), with its direction
  inferred from the name or given as `keras_tuner.Objective(name, direction)`.

The objective is computed at the end of each epoch by a callback that writes
it into the epoch `logs`, where keras-tuner reads it. A trial whose objective
or loss is not finite (diverged) ends as FAILED (`keras_tuner.errors.
FailedTrialError`) and the search goes on. The search is resumable: calling
`tune` again with the same `directory` and `project_name` (the default
`overwrite=False`) reloads the finished trials and reruns the one that was
interrupted. keras-tuner's chief/worker mode (`KERASTUNER_TUNER_ID`,
`KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT`) works unchanged: the chief
serves the oracle and writes the results, the workers run trials.

Outputs of `tune` (in `out_dir`, by default the project folder; each written
to a temporary file and renamed into place, so a killed search never leaves
a truncated one):
`tuning_results.csv`, `tuning_results.md` (one row per trial, failed ones
included), `tuning_plot.png` (objective per trial; chosen loss weights per
task) and `best_recipe.yaml`, a recipe that `mtlzoo.get_recipe(path)` and
`mtlzoo train` accept.

Example:
```python
import mtlzoo.tuning
result = mtlzoo.tuning.tune("tabular_demo", tuner="bayesian", trials=20, epochs=5,
                            data=(x, y), validation_data=(x_val, y_val),
                            directory="tuning", search_weighting=["fixed", "dwa"])
result.best_recipe_path, result.best_hyperparameters
model = mtlzoo.build(result.best_recipe_path)
```

Reference:
    Maninis, Radosavovic and Kokkinos, "Attentive Single-Tasking of Multiple
    Tasks", CVPR 2019 (Δm). Li et al., "Hyperband: A Novel Bandit-Based
    Approach to Hyperparameter Optimization", JMLR 2018. Snoek, Larochelle and
    Adams, "Practical Bayesian Optimization of Machine Learning Algorithms",
    NeurIPS 2012. O'Malley et al., KerasTuner, https://github.com/keras-team/keras-tuner.
"""

from mtlzoo.tuning.hypermodel import MultiTaskHyperModel
from mtlzoo.tuning.objective import ObjectiveCallback, infer_direction, logged_names
from mtlzoo.tuning.results import TuneResult, write_plot, write_table
from mtlzoo.tuning.search import check_project_overwrite, tune
from mtlzoo.tuning.space import (AGGREGATOR_SPACE, BUILTIN_OBJECTIVES, DEFAULT_AGGREGATORS, DEFAULT_WEIGHTINGS,
                                 SHARING_SPACE, TUNERS, WEIGHT_MODES, WEIGHTING_SPACE, TuningError)

__all__ = ["MultiTaskHyperModel", "ObjectiveCallback", "TuneResult", "TUNERS", "TuningError", "check_project_overwrite",
           "infer_direction", "tune"]

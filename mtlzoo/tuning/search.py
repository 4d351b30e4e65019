"""`tune`: search a recipe's hyperparameters with KerasTuner."""

from __future__ import annotations

import os
import warnings

import keras_tuner as kt

from mtlzoo import fileio
from mtlzoo.recipe import Recipe
from mtlzoo.registry import suggestion
from mtlzoo.tuning.hypermodel import MultiTaskHyperModel
from mtlzoo.tuning.results import TuneResult, trial_rows, write_plot, write_table
from mtlzoo.tuning.space import TUNERS, TuningError

__all__ = ["check_project_overwrite", "tune"]


# ---------------------------------------------------------------- tune
def check_project_overwrite(directory, project_name):
    """Refuses `overwrite=True` unless `directory/project_name` is absent or an earlier keras-tuner project.

    keras-tuner's `overwrite=True` deletes the whole project folder; mtlzoo lets
    it do so only when the folder holds keras-tuner's `oracle.json` (or is
    empty), so a mistyped `--out`/`--project` never deletes unrelated files.

    Raises:
        FileExistsError: naming the folder, which was left untouched.
    """
    path = os.path.join(os.fspath(directory), project_name)
    if not os.path.lexists(path):
        return
    if os.path.islink(path) or not os.path.isdir(path):
        raise FileExistsError(
            f"--overwrite: {path!r} is not a tuning project folder (it is a file or a link); it was left untouched. "
            "Choose another --out or --project."
        )
    if os.listdir(path) and not os.path.isfile(os.path.join(path, "oracle.json")):
        raise FileExistsError(
            f"--overwrite: {path!r} holds files that are not an earlier tuning project (no oracle.json); it was "
            "left untouched. Choose another --out or --project, or move those files away."
        )


def tune(
    recipe,
    tuner="random",
    trials=10,
    directory="tuning",
    project_name=None,
    objective="val_norm_loss",
    strategy=None,
    data=None,
    validation_data=None,
    baselines=None,
    higher_is_better=None,
    search_weights="log_uniform",
    weight_range=(0.01, 10.0),
    search_weighting=False,
    search_aggregator=False,
    search_sharing=False,
    epochs=None,
    norm_reference="initial",
    overwrite=False,
    seed=None,
    tuner_seed=None,
    executions_per_trial=1,
    max_consecutive_failed_trials=None,
    callbacks=(),
    out_dir=None,
    tuner_args=None,
    verbose=0,
    **overrides,
):
    """Searches a recipe's loss weights (and optionally weighting, aggregator, sharing) with keras-tuner.

    Everything is checked before the first trial: the tuner name, the search
    space, the objective (it must be logged by the model or the tuning
    callbacks), the strategy name, TF_CONFIG (when set or when
    `strategy="multi_worker"`) and keras-tuner's distributed-search variables.

    Args:
        recipe: str, path or `Recipe`.
        tuner: "random", "bayesian" or "hyperband".
        trials: int >= 1. Trials in total, a resumed search's finished ones
            included (random, bayesian). Hyperband runs its own schedule with
            `max_epochs=epochs` and ignores it.
        directory: str. keras-tuner's working folder (trials, oracle state).
        project_name: str. Defaults to "{recipe name}_{tuner}".
        objective: str or `keras_tuner.Objective`. "val_norm_loss" (default),
            "val_delta_m" (needs `baselines`) or a logged metric name.
        strategy: None, a name ("mirrored", "multi_worker", "one_device", "tpu")
            or a `tf.distribute.Strategy`: each trial's model is built and
            trained under it.
        data, validation_data: training / validation data (a `tf.data.Dataset`
            or an (x, y) pair); None loads the recipe's `data` section.
        baselines, higher_is_better, search_weights, weight_range,
        search_weighting, search_aggregator, search_sharing, epochs,
        norm_reference: see `MultiTaskHyperModel`.
        overwrite: bool. Start over instead of resuming. Defaults to False.
        seed: int or None. The recipe's seed (weight initialisation, data
            order), like `recipe.seed`; None keeps the recipe's.
        tuner_seed: int or None. The tuner's seed (which values it draws).
        executions_per_trial: int. Trainings averaged per trial.
        max_consecutive_failed_trials: int or None. Stop after that many
            failed trials in a row; None never stops for failures.
        callbacks: extra Keras callbacks for every trial.
        out_dir: str or None. Where the table, plot and best recipe go
            (default: the project folder).
        tuner_args: dict. Extra arguments of the keras-tuner class
            (`num_initial_points`, `factor`, ...).
        verbose: int. Passed to `search`.
        **overrides: recipe overrides.

    Returns:
        A `TuneResult`.

    Raises:
        ValueError: bad input (before any trial).
        RuntimeError: no trial completed (the table is written first).

    Example:
    ```python
    result = mtlzoo.tuning.tune("driving_perception_lite", tuner="bayesian", trials=30,
                                objective="val_delta_m",
                                baselines={"segmentation": {"miou": 0.52}, "depth": {"abs_err": 4.1}})
    print(open(result.table_md).read())
    ```
    """
    from mtlzoo import distribute

    if not isinstance(tuner, str) or tuner.lower() not in TUNERS:
        raise TuningError(f"Unknown tuner {tuner!r}.{suggestion(str(tuner), TUNERS)} Known: {', '.join(TUNERS)}.")
    tuner = tuner.lower()
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise TuningError(f"trials must be an integer >= 1, got {trials!r}.")
    role = distribute.check_tuner_env()
    if os.environ.get("TF_CONFIG"):
        distribute.validate_tf_config(for_strategy="multi_worker" if strategy == "multi_worker" else "any")
    distribute.check_strategy(strategy)
    if seed is not None:
        overrides["seed"] = int(seed)
    hypermodel = MultiTaskHyperModel(
        recipe, data=data, validation_data=validation_data, baselines=baselines, higher_is_better=higher_is_better,
        search_weights=search_weights, weight_range=weight_range, search_weighting=search_weighting,
        search_aggregator=search_aggregator, search_sharing=search_sharing, epochs=epochs, objective=objective,
        norm_reference=norm_reference, callbacks=callbacks, **overrides,
    )
    if tuner == "hyperband" and hypermodel.epochs < 2:
        raise TuningError("tuner='hyperband' needs epochs >= 2 (its max_epochs).")
    resolved = distribute.resolve_strategy(strategy)
    project_name = project_name or f"{hypermodel.recipe.name}_{tuner}"
    if overwrite:
        check_project_overwrite(directory, project_name)
    common = dict(
        hypermodel=hypermodel,
        objective=hypermodel.objective,
        directory=str(directory),
        project_name=project_name,
        overwrite=bool(overwrite),
        seed=tuner_seed,
        executions_per_trial=int(executions_per_trial),
        max_consecutive_failed_trials=int(max_consecutive_failed_trials or 10**9),
        distribution_strategy=resolved,
    )
    common.update(tuner_args or {})
    if tuner == "random":
        kt_tuner = kt.RandomSearch(max_trials=trials, **common)
    elif tuner == "bayesian":
        common.setdefault("num_initial_points", min(trials, max(2, 3 * len(hypermodel.task_names))))
        kt_tuner = kt.BayesianOptimization(max_trials=trials, **common)
    else:
        common.setdefault("factor", 3)
        kt_tuner = kt.Hyperband(max_epochs=hypermodel.epochs, **common)
    if role != "chief":
        hypermodel._datasets()  # load the recipe's data once, before the first trial
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")
        kt_tuner.search(verbose=verbose)
    result = TuneResult(role=role, objective=hypermodel.objective, rows=[], tuner=kt_tuner)
    if role == "worker":
        return result
    out_dir = str(out_dir or kt_tuner.project_dir)
    os.makedirs(out_dir, exist_ok=True)
    rows = trial_rows(kt_tuner, hypermodel)
    result.rows = rows
    result.table_csv = os.path.join(out_dir, "tuning_results.csv")
    result.table_md = os.path.join(out_dir, "tuning_results.md")
    write_table(rows, result.table_csv, result.table_md)
    result.plot = os.path.join(out_dir, "tuning_plot.png")
    write_plot(rows, hypermodel.objective.name, hypermodel.task_names, result.plot, hypermodel.objective.direction)
    best = kt_tuner.oracle.get_best_trials(1)
    best = [t for t in best if str(t.status) == "COMPLETED" and t.score is not None]
    if not best:
        messages = "; ".join(f"trial {r['trial']}: {r['message']}" for r in rows if r["message"])
        raise RuntimeError(f"No trial completed ({len(rows)} tried; table in {result.table_md}). {messages}")
    trial = best[0]
    result.best_hyperparameters = dict(trial.hyperparameters.values)
    result.best_score = float(trial.score)
    best_recipe = hypermodel.recipe_for(trial.hyperparameters)
    data = best_recipe.to_dict()
    data["name"] = f"{hypermodel.recipe.name}_tuned"
    data["description"] = (
        f"{hypermodel.recipe.description} Tuned by mtlzoo.tuning ({tuner}, {len(rows)} trials, "
        f"{hypermodel.objective.name}={result.best_score:.4g}, trial {trial.trial_id})."
    ).strip()
    result.best_recipe = Recipe.from_dict(data)
    result.best_recipe_path = os.path.join(out_dir, "best_recipe.yaml")
    fileio.atomic_write_text(
        result.best_recipe_path,
        f"# Best recipe found by `mtlzoo tune` ({tuner}); objective {hypermodel.objective.name} = "
        f"{result.best_score:.6g} (trial {trial.trial_id}).\n" + result.best_recipe.to_yaml(),
    )
    return result

"""Training a recipe end to end: data, checks, callbacks, checkpoints and resumption.

`train(recipe)` loads the recipe's dataset (or takes yours), checks it against
the recipe before any model is built, builds and compiles the model (inside a
`tf.distribute` strategy scope when one is given), attaches the recipe's
loss-weighting callback and runs Keras `fit` with its progress bar. With an
`out_dir` it also writes:

- `out_dir/logs/`: TensorBoard events (`train/` and `validation/`): every
  per-task loss and metric, `loss`, `nonfinite_steps` and the loss weight of
  each task (`{task}_weight`: written by the weighting callback, or the fixed
  weights when there is none);
- `out_dir/history.csv`: the same values, one row per epoch (`HistoryCSV`);
- `out_dir/best.keras` (lowest `val_loss`, or `loss` without validation data)
  and `out_dir/last.keras` (after every epoch);
- `out_dir/backup/`: a `keras.callbacks.BackupAndRestore` state written at
  the end of every epoch. If training stops (crash, Ctrl-C, killed job),
  running the same call again resumes at the start of the epoch that was
  interrupted and trains to the same total number of epochs; the backup is
  deleted when training finishes;
- `out_dir/recipe.yaml` (the resolved recipe) and `out_dir/train_summary.json`
  (epochs run, step time, final logs, why training stopped).

Nothing is lost if the process is killed at any moment: every file is
written to a temporary name in `out_dir`, fsynced and renamed over the old
one (`mtlzoo.fileio`), so a checkpoint is always the complete old or the
complete new file. A finished run is never replaced silently: training the
same recipe with more epochs into its folder continues it (from `last.keras`
and `history.csv`), a different recipe is refused (`RunFolderError`, naming
the changed keys) unless `overwrite=True`. While a call trains, the folder
holds the lock file `.mtlzoo.lock` (pid and host): a second process is
refused; a lock left by a killed process is taken over.

Runs are repeatable: the recipe's `seed` (or `seed=`) seeds
`keras.utils.set_random_seed` (weights, dropout) and the data pipeline
(scene selection, shuffling, flips), so two runs with one seed on one machine
give identical losses. A resumed run restarts the data order of the
interrupted epoch, so it matches an uninterrupted run in epochs and files but
not bit for bit.

Example:
```python
import mtlzoo
result = mtlzoo.train("driving_perception_lite", epochs=2, out_dir="runs/lite",
                      **{"data.num_examples": 256})
result.history["segmentation_loss"]       # one value per epoch
model = mtlzoo.load("runs/lite/best.keras")
```
"""

from mtlzoo.deprecation import forward_moved
from mtlzoo.training.callbacks import AtomicModelCheckpoint, LossWeightLogger, StepTimer, StopOnNonFinite
from mtlzoo.training.loop import TrainResult, train
from mtlzoo.training.run_folder import (RUN_FILES, RUN_FOLDERS, HistoryCSV, RunBackup, RunFolderError, clear_run,
                                        read_history_rows, write_history_rows)
from mtlzoo.training.settings import TRAINING_KEYS, training_settings

__all__ = ["AtomicModelCheckpoint", "HistoryCSV", "LossWeightLogger", "RUN_FILES", "RUN_FOLDERS", "RunBackup",
           "RunFolderError", "StepTimer", "StopOnNonFinite", "TRAINING_KEYS", "TrainResult", "clear_run",
           "read_history_rows", "train", "training_settings", "write_history_rows"]

# Loading and checking data moved down to mtlzoo.data (evaluation and tuning use them too).
_MOVED = {"DataCheckError": ("mtlzoo.data.splits", "DataCheckError"),
          "DATA_KEYS": ("mtlzoo.data.splits", "DATA_KEYS"),
          "EVALUATION_KEYS": ("mtlzoo.data.splits", "EVALUATION_KEYS"),
          "check_dataset_name": ("mtlzoo.data.splits", "check_dataset_name"),
          "load_split": ("mtlzoo.data.splits", "load_split"),
          "check_dataset": ("mtlzoo.data.checks", "check_dataset")}


__getattr__ = forward_moved(__name__, _MOVED)

"""One process of a distributed keras-tuner search, for tests/test_tuning.py.

`python tests/tune_helper.py DIRECTORY TRIALS` with KERASTUNER_TUNER_ID
("chief", "tuner0", ...), KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT set:
the chief serves the oracle and writes the results; each worker runs trials
and appends its id to DIRECTORY/ran_by.txt once per trial it trains.
"""

from __future__ import annotations

import os
import sys


def tabular_data(n, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16)).astype("float32")
    y = {
        "label": ((x[:, 0] > 0).astype("int32") + (x[:, 1] > 1).astype("int32")),
        "target": (x[:, :1] * 2.0 - x[:, 2:3]).astype("float32"),
    }
    return x, y


def main(directory, trials):
    import keras

    from mtlzoo.tuning import tune

    tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "single")

    class RanBy(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            with open(os.path.join(directory, "ran_by.txt"), "a") as f:
                f.write(tuner_id + "\n")

    result = tune(
        "tabular_demo", tuner="random", trials=trials, epochs=2, directory=directory, project_name="dist",
        data=tabular_data(64, 0), validation_data=tabular_data(32, 1), tuner_seed=3, callbacks=[RanBy()],
    )
    print(f"{tuner_id}: role={result.role} rows={len(result.rows)}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main(sys.argv[1], int(sys.argv[2]))

"""Two synthetic regression tasks with a controllable correlation (Ma et al., KDD 2018, section 3).

The generator of the MMoE paper's task-relatedness study:

1. two orthogonal unit vectors `u1, u2 ∈ R^d`;
2. `w1 = c·u1` and `w2 = c·(ρ·u1 + sqrt(1 − ρ²)·u2)`, so the cosine of the
   two weight vectors is ρ;
3. inputs `x ~ N(0, I_d)`;
4. `y_i = w_iᵀx + Σ_{j=1..m} sin(α_j·w_iᵀx + β_j) + ε_i`, `ε_i ~ N(0, σ²)`.

The linear parts `w1ᵀx` and `w2ᵀx` have Pearson correlation ρ; the sines make
the tasks' relation non-linear, so the label correlation is close to, not
equal to, ρ. The task parameters (u1, u2, α, β) depend on `seed` only, so
every split of one seed shares them; the examples of each split are drawn
from `seed` and the split name. Registered as the dataset "correlated_tasks":
labels are `{"y1": [B, 1], "y2": [B, 1]}` and the input a float32 vector.

Example:
```python
import mtlzoo.data
train = mtlzoo.data.load("correlated_tasks", batch_size=64, rho=0.5, seed=0)
from mtlzoo.data.correlated_tasks import generate
x, y, linear = generate(1000, rho=0.9, with_linear=True)
```

Reference:
    Ma et al., "Modeling Task Relationships in Multi-task Learning with
    Multi-gate Mixture-of-Experts", KDD 2018.
"""

from __future__ import annotations

import numbers

import numpy as np

TASK_NAMES = ("y1", "y2")
SPLIT_SIZES = {"train": 10000, "validation": 1000, "test": 1000}
_SPLIT_STREAMS = {"train": 1, "validation": 2, "test": 3}


def _check(name, value, low=None, high=None, integer=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or (integer and int(value) != value):
        raise ValueError(f"correlated_tasks: {name} must be a {'int' if integer else 'number'}, got {value!r}.")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"correlated_tasks: {name} must be in [{low}, {high}], got {value!r}.")
    return int(value) if integer else float(value)


def task_parameters(rho, dim=100, scale=1.0, num_sines=10, seed=0):
    """(w1, w2, alpha, beta) of the generator for correlation `rho` (see the module docstring).

    u1, u2 come from a QR decomposition of a Gaussian [dim, 2] matrix; α and β
    are drawn from N(0, 1). Only `seed` decides them, not `rho`, so datasets
    that differ in ρ share u1, u2, α and β.
    """
    rho = _check("rho", rho, -1.0, 1.0)
    dim = _check("dim", dim, 2, None, integer=True)
    num_sines = _check("num_sines", num_sines, 0, None, integer=True)
    _check("seed", seed, 0, None, integer=True)
    rng = np.random.default_rng([int(seed), 0])
    q, _ = np.linalg.qr(rng.standard_normal((dim, 2)))
    u1, u2 = q[:, 0], q[:, 1]
    w1 = float(scale) * u1
    w2 = float(scale) * (rho * u1 + np.sqrt(1.0 - rho**2) * u2)
    alpha = rng.standard_normal(num_sines)
    beta = rng.standard_normal(num_sines)
    return w1, w2, alpha, beta


def generate(num_examples, rho, dim=100, scale=1.0, num_sines=10, noise_std=0.1, seed=0, split="train",
             with_linear=False):
    """Draws `num_examples` examples of the two tasks as NumPy arrays.

    Args:
        num_examples: int > 0. Number of examples.
        rho: float in [-1, 1]. Cosine of the tasks' weight vectors (the
            Pearson correlation of their linear parts).
        dim: int >= 2. Input dimension d (the paper's 100). Defaults to 100.
        scale: float. c, the norm of both weight vectors. Defaults to 1.0.
        num_sines: int >= 0. m, the number of sine terms. Defaults to 10.
        noise_std: float >= 0. σ of the label noise (the paper's ε ~ N(0, 0.01)
            read as a variance). Defaults to 0.1.
        seed: int >= 0. Seed of the task parameters and of the examples.
        split: str. "train", "validation" or "test": each split has its own
            examples, the same task parameters. Defaults to "train".
        with_linear: bool. Also return the noise-free linear parts. Defaults to False.

    Returns:
        `(x, labels)` with x float32 [N, dim] and labels
        `{"y1": float32 [N, 1], "y2": float32 [N, 1]}`; with `with_linear`,
        `(x, labels, linear)` where `linear = {"y1": w1ᵀx, "y2": w2ᵀx}` ([N]).

    Example:
    ```python
    x, y, linear = generate(2000, rho=0.5, with_linear=True)
    np.corrcoef(linear["y1"], linear["y2"])[0, 1]   # about 0.5
    ```
    """
    num_examples = _check("num_examples", num_examples, 1, None, integer=True)
    noise_std = _check("noise_std", noise_std, 0.0)
    if split not in _SPLIT_STREAMS:
        raise ValueError(f"correlated_tasks: unknown split {split!r}; use one of {', '.join(_SPLIT_STREAMS)}.")
    w1, w2, alpha, beta = task_parameters(rho, dim, scale, num_sines, seed)
    rng = np.random.default_rng([int(seed), _SPLIT_STREAMS[split]])
    x = rng.standard_normal((num_examples, int(dim)))
    labels, linear = {}, {}
    for name, w in zip(TASK_NAMES, (w1, w2)):
        lin = x @ w
        y = lin + np.sin(np.outer(lin, alpha) + beta).sum(axis=1) + noise_std * rng.standard_normal(num_examples)
        labels[name] = y.astype("float32")[:, None]
        linear[name] = lin
    x = x.astype("float32")
    return (x, labels, linear) if with_linear else (x, labels)


def load(split="train", batch_size=32, image_size=None, data_dir=None, num_examples=None, seed=0,
         label_fractions=None, shuffle=None, rho=0.5, dim=100, scale=1.0, num_sines=10, noise_std=0.1,
         tasks=None, drop_remainder=False):
    """The reader behind `mtlzoo.data.load("correlated_tasks", ...)`: a batched `tf.data.Dataset` of (x, labels).

    Args:
        split: str. "train", "validation" or "test". Defaults to "train".
        batch_size: int > 0. Defaults to 32.
        image_size: ignored (the input is a vector); accepted for the common reader signature.
        data_dir: ignored (generated in memory).
        num_examples: int > 0 or None. Examples in the split; None: 10000
            train, 1000 validation, 1000 test.
        seed: int >= 0. Seed of the task parameters and examples (deterministic per seed).
        label_fractions: must be None or empty (every example carries both labels).
        shuffle: bool or None. None shuffles the train split only.
        rho, dim, scale, num_sines, noise_std: the generator's settings (see `generate`).
        tasks: list of label keys to emit ("y1", "y2"); None for both.
        drop_remainder: bool. Drop the last partial batch. Defaults to False.

    Returns:
        `tf.data.Dataset` of `(x float32 [B, dim], {"y1": [B, 1], "y2": [B, 1]})`.

    Example:
    ```python
    ds = mtlzoo.data.load("correlated_tasks", batch_size=64, rho=0.9, num_examples=2000)
    ```
    """
    import tensorflow as tf

    if label_fractions:
        raise ValueError("correlated_tasks: label_fractions are not supported; every example has both labels.")
    wanted = list(TASK_NAMES) if tasks is None else [tasks] if isinstance(tasks, str) else list(tasks)
    unknown = [t for t in wanted if t not in TASK_NAMES]
    if unknown or not wanted:
        raise ValueError(
            f"correlated_tasks: unknown tasks {unknown or wanted!r}; its tasks are {', '.join(TASK_NAMES)} "
            "(name the recipe's tasks y1 and y2)."
        )
    count = SPLIT_SIZES.get(split, 1000) if num_examples is None else num_examples
    x, labels = generate(count, rho, dim, scale, num_sines, noise_std, seed, split)
    ds = tf.data.Dataset.from_tensor_slices((x, {t: labels[t] for t in wanted}))
    if split == "train" if shuffle is None else shuffle:
        ds = ds.shuffle(len(x), seed=int(seed), reshuffle_each_iteration=True)
    return ds.batch(int(batch_size), drop_remainder=bool(drop_remainder)).prefetch(tf.data.AUTOTUNE)

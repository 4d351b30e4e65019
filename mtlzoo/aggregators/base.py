"""The `Aggregator` base class and small TensorFlow helpers shared by the methods.

An aggregator turns the per-task gradients of the shared parameters, a matrix
`grads` of shape [T, P] (T tasks, P flattened shared parameters), into one
update direction of shape [P]:

```python
import mtlzoo.aggregators
agg = mtlzoo.aggregators.get("cagrad", c=0.5)
d = agg(grads, losses=None)             # tf.Tensor [P]
w = agg.task_weights(grads, losses)     # [T], only where agg.weight_based
```

Conventions shared by every method:

- Everything is written with TensorFlow ops, so one object runs eagerly on
  NumPy or tf inputs and inside a `tf.function` train step (graph mode; T must
  be static, P may be dynamic except for DB-MTL with `beta > 0`). Internally
  the computation is done in float32; the direction is returned in the floating
  dtype of `grads` (float32 for integer input).
- Solvers work on the [T, T] Gram matrix `grads @ grads.T`, so their cost is
  O(T^2 P) for the Gram matrix plus O(iterations * T^3). Iterative solvers run
  in a `tf.while_loop` (never a data-dependent Python loop): most for a fixed,
  documented number of iterations; the exact QP solvers of `qp.py` (UPGrad,
  MGDA, CAGrad, SDMGrad) and Nash-MTL's Newton method stop at their
  convergence certificate, under a cap, and fall back to the equal-weight
  direction with a printed warning if the cap is hit. Methods with
  `float64_gram = True` form the Gram matrix and the weighted sum in float64.
- Non-finite input: if `grads` (or the `losses` a method uses) contain a NaN or
  an infinity, the solvers run on sanitised zeros so that no linear-algebra op
  raises, the returned direction (and `task_weights`) is all NaN so the train
  step can skip the step, and no state variable is modified.
- Stateful methods (random task orders, EMA targets, gradient buffers) keep
  their state in `tf.Variable`s created by `build(num_tasks, num_params)`. The
  train step should call `agg.build(T, P)` before tracing its `tf.function`;
  otherwise the first call builds lazily (eagerly, or during the first trace
  through `tf.init_scope`). `reset_state()` restores the initial state
  (including the random generator, when a `seed` was given).
- `identical_scale(T)`: for T identical task gradients g, a freshly reset
  aggregator returns `identical_scale(T) * g` (1.0 for "mean"-like methods,
  T for "sum"-like methods).
"""

from __future__ import annotations

import inspect
import math
import numbers

import tensorflow as tf

# Small constants used by the solvers (float32 computations).
EPS = 1e-8
TINY = 1e-30


class Aggregator:
    """Base class of the gradient aggregators (multi-task gradient combiners).

    Subclasses set the class attributes below and implement either
    `_weights(grads, gram, losses, finite)` (weight-based methods: the
    direction is `w @ grads`) or `_aggregate(grads, losses, finite)` (any other
    direction); `grads` arrive float32 and sanitised (zeros when not finite),
    `finite` is the scalar bool used to guard state updates. Stateful
    methods create their variables in `_build_state` and restore them in
    `_reset_state`. They take their hyperparameters as constructor arguments
    stored as attributes of the same name, which gives `get_config` for free.

    Attributes:
        requires_losses: bool. True where `__call__` needs the task losses.
        weight_based: bool. True where the direction is `task_weights(...) @ grads`.
        stateful: bool. True where the method keeps `tf.Variable` state (EMA
            targets, buffers, a random generator).
        float64_gram: bool. True where `_weights` receives a float64 Gram
            matrix and the direction `w @ grads` is summed in float64 (the
            exact solvers: float32 Gram entries lose the small tasks when
            gradient norms differ by 1e4).

    Example:
    ```python
    import mtlzoo.aggregators
    agg = mtlzoo.aggregators.get("mean")
    d = agg([[1.0, 0.0], [0.0, 1.0]])     # [0.5, 0.5]
    ```
    """

    name: str = ""
    requires_losses: bool = False
    weight_based: bool = False
    stateful: bool = False
    float64_gram: bool = False

    def __init__(self):
        self.built = False
        self._num_tasks = None

    # ----------------------------------------------------------------- public
    def identical_scale(self, num_tasks: int) -> float:
        """Factor s with `agg([g] * T) == s * g` for a freshly reset aggregator."""
        return 1.0

    def build(self, num_tasks: int, num_params: int | None = None) -> None:
        """Creates the state variables for `num_tasks` tasks (no-op when stateless).

        Call it before tracing a `tf.function` that uses the aggregator. A
        built stateful aggregator only accepts `num_tasks` tasks afterwards.

        Args:
            num_tasks: int. Number of tasks T.
            num_params: int or None. Length P of the flattened gradients; only
                DB-MTL (with `beta > 0`) needs it, and builds that part lazily
                on the first call when it is None.
        """
        num_tasks = _positive_int("num_tasks", num_tasks)
        if self.built:
            if num_tasks != self._num_tasks:
                raise ValueError(
                    f"{type(self).__name__} was built for {self._num_tasks} tasks, "
                    f"got {num_tasks}. Create a new aggregator for a different number of tasks."
                )
            return
        with tf.init_scope():
            self._build_state(num_tasks, num_params)
        self._num_tasks = num_tasks
        self.built = True

    def reset_state(self) -> None:
        """Restores the initial state (no-op for stateless or unbuilt aggregators)."""
        if self.built:
            self._reset_state()

    def __call__(self, grads, losses=None):
        """Aggregates per-task gradients `grads` [T, P] into one direction [P].

        Args:
            grads: float array-like or tf.Tensor [T, P]. Per-task gradients.
            losses: float array-like or tf.Tensor [T], or None. Task losses;
                required where `requires_losses` is True, ignored otherwise.

        Returns:
            tf.Tensor [P]: the update direction (all NaN when the input is not finite).
        """
        grads, losses, finite, dtype = self._prepare(grads, losses)
        self._maybe_build(grads)
        if self.weight_based and self.float64_gram:
            grads64 = tf.cast(grads, tf.float64)
            w = tf.cast(self._weights(grads, _gram(grads64), losses, finite), tf.float64)
            d = tf.cast(tf.linalg.matvec(grads64, w, transpose_a=True), tf.float32)
        elif self.weight_based:
            w = self._weights(grads, _gram(grads), losses, finite)
            d = tf.linalg.matvec(grads, w, transpose_a=True)
        else:
            d = self._aggregate(grads, losses, finite)
        return tf.cast(_nan_unless(finite, d), dtype)

    def task_weights(self, grads, losses=None):
        """Task weights w [T] with `self(grads, losses) == w @ grads`.

        Only weight-based methods (`weight_based` is True) have them; the train
        step uses them for the representation-level ("-UB") variants, where
        `grads` are the gradients w.r.t. the shared feature map. For stateful
        methods each call counts as one step, like `__call__`.

        Args:
            grads: float array-like or tf.Tensor [T, P]. Per-task gradients.
            losses: float array-like or tf.Tensor [T], or None. Task losses.

        Returns:
            tf.Tensor [T] float32 (all NaN when the input is not finite).
        """
        if not self.weight_based:
            raise TypeError(
                f"{type(self).__name__} is not weight-based: its direction is not a linear "
                f"combination of the task gradients, so it has no task_weights(). "
                f"Weight-based aggregators have `weight_based == True`."
            )
        grads, losses, finite, _ = self._prepare(grads, losses)
        self._maybe_build(grads)
        gram = _gram(tf.cast(grads, tf.float64)) if self.float64_gram else _gram(grads)
        w = tf.cast(self._weights(grads, gram, losses, finite), tf.float32)
        return _nan_unless(finite, w)

    def get_config(self) -> dict:
        """The constructor hyperparameters; `type(self)(**self.get_config())` round-trips."""
        params = inspect.signature(type(self).__init__).parameters
        return {k: getattr(self, k) for k in params if k != "self"}

    @classmethod
    def from_config(cls, config: dict):
        """Creates an aggregator from `get_config()` output."""
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------- subclass hooks
    def _weights(self, grads, gram, losses, finite):  # pragma: no cover - abstract
        raise NotImplementedError

    def _aggregate(self, grads, losses, finite):  # pragma: no cover - abstract
        raise NotImplementedError

    def _build_state(self, num_tasks, num_params):
        pass

    def _reset_state(self):
        pass

    # --------------------------------------------------------------- helpers
    def _prepare(self, grads, losses):
        grads = tf.stop_gradient(tf.convert_to_tensor(grads))
        dtype = grads.dtype if grads.dtype.is_floating else tf.float32
        grads = tf.cast(grads, tf.float32)
        if grads.shape.rank != 2:
            raise ValueError(
                f"{type(self).__name__} expects `grads` of shape [T, P] (one flattened "
                f"gradient per task), got shape {grads.shape}."
            )
        num_tasks = grads.shape[0]
        if num_tasks is None:
            raise ValueError(
                f"{type(self).__name__} needs a static number of tasks (first dimension of "
                f"`grads`); got shape {grads.shape}."
            )
        if num_tasks < 1:
            raise ValueError(f"{type(self).__name__} needs at least one task gradient, got shape {grads.shape}.")
        finite = tf.reduce_all(tf.math.is_finite(grads))
        if self.requires_losses:
            if losses is None:
                raise ValueError(
                    f"{type(self).__name__} needs the task losses: call it as agg(grads, losses) "
                    f"with losses of shape [{num_tasks}]."
                )
            losses = tf.reshape(tf.cast(tf.stop_gradient(tf.convert_to_tensor(losses)), tf.float32), [-1])
            if losses.shape[0] is not None and losses.shape[0] != num_tasks:
                raise ValueError(
                    f"{type(self).__name__}: `losses` has {losses.shape[0]} entries but `grads` "
                    f"has {num_tasks} tasks."
                )
            losses_ok = tf.reduce_all(tf.math.is_finite(losses))
            finite = tf.logical_and(finite, losses_ok)
            losses = tf.where(finite, losses, tf.ones_like(losses))
        else:
            losses = None
        grads = tf.where(finite, grads, tf.zeros_like(grads))
        return grads, losses, finite, dtype

    def _maybe_build(self, grads):
        if not self.stateful:
            return
        num_tasks = grads.shape[0]
        if not self.built:
            self.build(num_tasks, grads.shape[1])
        elif num_tasks != self._num_tasks:
            raise ValueError(
                f"{type(self).__name__} was built for {self._num_tasks} tasks, got gradients "
                f"for {num_tasks}. Create a new aggregator for a different number of tasks."
            )

    def _name(self):
        return type(self).__name__


# ------------------------------------------------------------------ validation
def _number(owner, name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{owner}: `{name}` must be a finite real number, got {value!r}.")
    return float(value)


def check_range(owner: str, name: str, value, low=None, high=None, *, low_open=False, high_open=False) -> float:
    """Validates a real hyperparameter against [low, high] (or open ends); returns it as float."""
    v = _number(owner, name, value)
    bad = (low is not None and (v < low or (low_open and v == low))) or (
        high is not None and (v > high or (high_open and v == high))
    )
    if bad:
        lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
        raise ValueError(f"{owner}: `{name}` must be in {lo}, {hi}, got {value!r}.")
    return v


def check_int(owner: str, name: str, value, low: int = 1) -> int:
    """Validates an integer hyperparameter >= low; returns it as int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{owner}: `{name}` must be an integer >= {low}, got {value!r}.")
    return int(value)


def check_choice(owner: str, name: str, value, choices) -> str:
    """Validates a string hyperparameter against `choices`."""
    if value not in choices:
        raise ValueError(f"{owner}: `{name}` must be one of {sorted(choices)}, got {value!r}.")
    return value


def check_seed(owner: str, seed):
    """Validates a random seed: None (non-deterministic) or a non-negative int."""
    if seed is None:
        return None
    return check_int(owner, "seed", seed, low=0)


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


# ------------------------------------------------------------ tensor helpers
def _gram(grads):
    """[T, T] Gram matrix of the rows of `grads`."""
    return tf.matmul(grads, grads, transpose_b=True)


def _nan_unless(finite, x):
    return tf.where(finite, x, tf.fill(tf.shape(x), tf.constant(float("nan"), x.dtype)))


def safe_divide(x, y):
    """x / y, with 0 where |y| is (nearly) zero."""
    ok = tf.abs(y) > TINY
    return tf.where(ok, x / tf.where(ok, y, tf.ones_like(y)), tf.zeros_like(x))


def project_simplex(v):
    """Euclidean projection of the vector v [T] onto the probability simplex.

    Sort-based algorithm (Held et al. 1974; Duchi et al. 2008), O(T log T).
    """
    t = tf.shape(v)[0]
    u = tf.sort(v, direction="DESCENDING")
    css = tf.cumsum(u) - 1.0
    ind = tf.cast(tf.range(1, t + 1), v.dtype)
    cond = u - css / ind > 0
    rho = tf.reduce_max(tf.where(cond, tf.range(t), tf.zeros_like(tf.range(t))))
    theta = css[rho] / tf.cast(rho + 1, v.dtype)
    return tf.maximum(v - theta, 0.0)


def new_generator(seed):
    """A `tf.random.Generator` from `seed` (non-deterministic when None)."""
    if seed is None:
        return tf.random.Generator.from_non_deterministic_state()
    return tf.random.Generator.from_seed(seed)


def reset_generator(generator, seed):
    if seed is None:
        generator.reset(tf.random.Generator.from_non_deterministic_state().state)
    else:
        generator.reset_from_seed(seed)


def random_permutations(generator, num_tasks, exclude_self=False):
    """[T, T] int32: row i is a uniformly random order of the tasks.

    With `exclude_self`, task i comes last in row i (callers use the first T-1).
    """
    u = generator.uniform([num_tasks, num_tasks])
    if exclude_self:
        u = tf.where(tf.eye(num_tasks, dtype=tf.bool), tf.fill([num_tasks, num_tasks], 2.0), u)
    return tf.argsort(u, axis=1, stable=True)

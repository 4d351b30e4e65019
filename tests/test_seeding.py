"""Seeding a build: the same recipe and seed give the same initial weights, without touching TensorFlow's
global seed, whose setter clears the eager kernel caches and stalls the next step of every model built before."""

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.eager import context

import mtlzoo
from mtlzoo.testing import TINY_IMAGE, random_inputs, random_labels

TINY = dict(TINY_IMAGE, tasks=["depth", "scene"])


def weights(model):
    return [np.asarray(w) for w in model.get_weights()]


def test_build_leaves_tf_seed_and_kernel_caches_alone(monkeypatch):
    cleared, tf_seeds = [], []
    clear = context.pywrap_tfe.TFE_ContextClearCaches
    monkeypatch.setattr(context.pywrap_tfe, "TFE_ContextClearCaches", lambda handle: cleared.append(1) or clear(handle))
    monkeypatch.setattr(tf.random, "set_seed", tf_seeds.append)
    seed_before = context.context()._seed
    first = mtlzoo.build("driving_perception_lite", seed=1, **TINY)
    x, y = random_inputs(first, 2), random_labels(first, 2)
    first.train_on_batch(x, y)
    train_function = first.train_function
    mtlzoo.build("driving_perception_lite", seed=2, **TINY)  # a second model in the same process
    first.train_on_batch(x, y)
    assert first.train_function is train_function  # its compiled step is kept
    assert cleared == [] and tf_seeds == [] and context.context()._seed == seed_before
    keras.utils.set_random_seed(5)  # what Recipe.build used to call: the spies see it
    assert tf_seeds == [5]


def test_same_seed_same_initial_weights_and_other_seeds_differ():
    a = weights(mtlzoo.build("driving_perception_lite", seed=3, compile=False, **TINY))
    b = weights(mtlzoo.build("driving_perception_lite", seed=4, compile=False, **TINY))
    c = weights(mtlzoo.build("driving_perception_lite", seed=3, compile=False, **TINY))
    assert len(a) == len(c) and all(np.array_equal(u, v) for u, v in zip(a, c))
    kernels = [i for i, w in enumerate(a) if w.ndim > 1]
    assert kernels and all(not np.array_equal(a[i], b[i]) for i in kernels)

"""Distribution strategies for mtlzoo: names, TF_CONFIG checks, and the replica-aware step helpers.

`resolve_strategy(spec)` turns a name (`"mirrored"`, `"multi_worker"`,
`"one_device"`, `"tpu"`), a `tf.distribute.Strategy` or None into the strategy
that `mtlzoo.training.train` and `mtlzoo.tuning.tune` build the model under:

```python
strategy = mtlzoo.distribute.resolve_strategy("mirrored")
with strategy.scope():
    model = mtlzoo.build("tabular_demo")
model.fit(dataset, epochs=3)           # the dataset's batch is the global batch
```

Two helpers make a multi-task train step give the same update under
distribution as on one device (the model calls them from its train step):

- `replica_task_loss` computes a masked task loss as this replica's share of
  the *global* mean over valid labels: the valid-label counts are summed
  across replicas first, so a replica whose shard has no label for a task
  (or fewer labels than the others) does not change the task's mean.
- `apply_if_finite` skips a non-finite step on every replica together (the
  finite flag is all-reduced, and the update is wrapped in a `tf.cond` in
  cross-replica context as Keras's `LossScaleOptimizer` does), so no replica
  applies an update that another one skips and the optimizer state
  (Adam moments, iterations) is left untouched by a skipped step.

`use_logical_cpus(n)` splits the CPU into `n` logical devices so that
`MirroredStrategy` can be tried (and tested) on a machine without
accelerators; it must run before TensorFlow initialises its devices.

What was tested where is listed in `docs/distributed.md`.

Reference:
    TensorFlow guide "Distributed training with TensorFlow"
    (https://www.tensorflow.org/guide/distributed_training) and the
    `TF_CONFIG` format of `tf.distribute.cluster_resolver.TFConfigClusterResolver`.
"""

from mtlzoo.distribute.cluster import check_tuner_env, free_ports, local_cluster, use_logical_cpus, validate_tf_config
from mtlzoo.distribute.replicas import (STRATEGIES, all_replicas, apply_if_finite, check_strategy, local_batch,
                                        num_replicas, replica_task_loss, resolve_strategy, step_logs)

__all__ = [
    'STRATEGIES',
    'all_replicas',
    'apply_if_finite',
    'check_strategy',
    'check_tuner_env',
    'free_ports',
    'local_batch',
    'local_cluster',
    'num_replicas',
    'replica_task_loss',
    'resolve_strategy',
    'step_logs',
    'use_logical_cpus',
    'validate_tf_config',
]

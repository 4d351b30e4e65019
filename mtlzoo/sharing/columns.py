"""Helpers for the column-per-task builders (cross-stitch, soft sharing)."""

from mtlzoo.neck import build_neck


def column_prefix(task):
    return f"{task}__col_"


def build_columns(inputs, backbone, tasks, neck_channels, mix=None):
    """One backbone column per task; `mix(i, xs)` may mix the task features after stage i.

    Returns (pyramids by task, backbone stage names by task, neck model names by task;
    the last is empty for vector inputs, which have no neck).
    """
    stages = {t: backbone(prefix=column_prefix(t)) for t in tasks}
    num_stages = len(next(iter(stages.values())))
    xs = {t: inputs for t in tasks}
    features = {t: [] for t in tasks}
    for i in range(num_stages):
        xs = {t: stages[t][i](xs[t]) for t in tasks}
        if mix is not None:
            xs = mix(i, xs)
        for t in tasks:
            features[t].append(xs[t])
    pyramids, necks = {}, {}
    for t in tasks:
        pyramids[t] = build_neck(features[t], neck_channels, name=f"{column_prefix(t)}neck")
        if len(features[t][-1].shape) == 4:  # vector features pass through without a neck
            necks[t] = f"{column_prefix(t)}neck"
    stage_names = {t: [s.name for s in stages[t]] for t in tasks}
    return pyramids, stage_names, necks

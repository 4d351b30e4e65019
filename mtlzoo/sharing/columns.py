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


def single_task_model_paths(init_from, tasks) -> dict:
    """{task: .keras path} from `init_from`: a dict {task: .keras file or mtlzoo.train out_dir}, or the folder of
    `mtlzoo baselines` (its `baselines.json` names each task's model). Tasks missing from it start from scratch.
    """
    import json
    import os

    if isinstance(init_from, (str, os.PathLike)):
        folder = os.fspath(init_from)
        index = os.path.join(folder, "baselines.json")
        if not os.path.isfile(index):
            raise FileNotFoundError(
                f"init_from={folder!r} is not a baselines folder (no baselines.json in it). Give the folder "
                "`mtlzoo baselines RECIPE --out FOLDER` wrote, or a dict {task: path of its single-task .keras}.")
        with open(index) as f:
            entries = json.load(f).get("tasks", {})
        init_from = {t: os.path.join(folder, e["model"]) for t, e in entries.items() if e.get("model")}
    if not isinstance(init_from, dict):
        raise TypeError(f"init_from must be a baselines folder or a dict {{task: path}}, got {type(init_from).__name__}.")
    unknown = sorted(set(init_from) - set(tasks))
    if unknown:
        from mtlzoo.registry import suggestion

        raise ValueError(f"init_from names task(s) {unknown} the model does not have "
                         f"(tasks: {', '.join(tasks)}).{suggestion(unknown[0], tasks)}")
    paths = {}
    for t, path in init_from.items():
        path = os.fspath(path)
        if os.path.isdir(path):
            found = [os.path.join(path, n) for n in ("best.keras", "last.keras") if os.path.isfile(os.path.join(path, n))]
            if not found:
                raise FileNotFoundError(f"init_from[{t!r}]: {path!r} holds no best.keras or last.keras.")
            path = found[0]
        if not os.path.isfile(path):
            raise FileNotFoundError(f"init_from[{t!r}]: no single-task model file at {path!r}.")
        paths[t] = path
    return paths


def init_columns_from(inputs, outputs, tasks, init_from) -> dict:
    """Copies trained single-task models into the task columns (and heads) of a column-per-task graph.

    Task `t`'s single-task model (the recipe on task `t` alone, hard sharing: what `mtlzoo baselines` trains)
    has backbone stages `backbone_<stage>`, a neck `neck` and head layers `t__*`; they are copied, moving
    BatchNorm statistics included, into `t__col_<stage>`, `t__col_neck` and the same head layers. Cross-stitch
    units and everything else keep their initial values, as in Misra et al. (2016), section 4.

    Returns:
        {task: number of layers copied}.

    Raises:
        ValueError: a single-task model does not fit the column (another backbone, input size, neck width or head),
            naming the layer and the two shapes.
    """
    import keras

    import mtlzoo.model  # noqa: F401  (registers MultiTaskModel and the heads for loading)

    graph = keras.Model(inputs, outputs)
    layers = {layer.name: layer for layer in graph.layers}
    copied = {}
    for t, path in single_task_model_paths(init_from, tasks).items():
        source = keras.saving.load_model(path, compile=False, safe_mode=True)
        count = 0
        for layer in source.layers:
            if not layer.weights:
                continue
            if layer.name.startswith("backbone_"):
                target = column_prefix(t) + layer.name[len("backbone_"):]
            elif layer.name == "neck":
                target = f"{column_prefix(t)}neck"
            elif layer.name == t or layer.name.startswith(t + "__"):
                target = layer.name
            else:
                continue  # model-level variables (loss weights) and layers of other tasks
            if target not in layers:
                raise ValueError(f"init_from[{t!r}]: {path} has layer {layer.name!r} but this model has no "
                                 f"{target!r}: train the single-task model with the same recipe (backbone, sharing "
                                 "'hard', tasks=[...]).")
            want = [tuple(w.shape) for w in layers[target].weights]
            have = [tuple(w.shape) for w in layer.weights]
            if want != have:
                raise ValueError(f"init_from[{t!r}]: layer {layer.name!r} of {path} has weight shapes {have}, the "
                                 f"column's {target!r} needs {want}: use a single-task model of the same recipe "
                                 "(input size, backbone, neck width, head).")
            layers[target].set_weights(layer.get_weights())
            count += 1
        if not count:
            raise ValueError(f"init_from[{t!r}]: {path} has no backbone, neck or {t!r} head layers to copy.")
        copied[t] = count
    return copied

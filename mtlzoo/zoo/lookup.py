"""`zoo:NAME` specs resolved to paths of the shipped models (nothing else: every floor may use it)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "check_inside",
    "is_zoo_spec",
    "list_models",
    "model_card",
    "MODEL_FILE",
    "PREFIX",
    "resolve",
    "root",
    "ZooSpecError",
]


PREFIX = "zoo:"


MODEL_FILE = "model.keras"


def root() -> Path:
    """The folder that holds the shipped models.

    The installed package `mtlzoo.zoo_models` (the repository's `saved_models/`) when present (a wheel or an
    editable install), else the `saved_models/` folder of a source checkout.
    `MTLZOO_ZOO_DIR` overrides both (a folder of the same layout).
    """
    override = os.environ.get("MTLZOO_ZOO_DIR")
    if override:
        return Path(override)
    try:
        import importlib

        package = importlib.import_module("mtlzoo.zoo_models")
        return Path(package.__file__).resolve().parent
    except ModuleNotFoundError:  # a source checkout without installation
        return Path(__file__).resolve().parents[2] / "saved_models"


def list_models() -> list:
    """Names of the shipped models (folders with a `model.keras`), sorted."""
    base = root()
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / MODEL_FILE).is_file())


def is_zoo_spec(value) -> bool:
    """True for a string `zoo:NAME` or `zoo:NAME/FILE`."""
    return isinstance(value, str) and value.startswith(PREFIX)


class ZooSpecError(ValueError):
    """A `zoo:` spec that is malformed or points outside the zoo's folder (`..`, an absolute path, a link)."""


def _outside(spec, detail) -> ZooSpecError:
    return ZooSpecError(
        f"Zoo spec {spec!r} {detail}; a zoo spec names a shipped model and a file inside its folder "
        "('zoo:NAME' or 'zoo:NAME/FILE', see mtlzoo.zoo.list_models())."
    )


def check_inside(path, spec) -> Path:
    """`path` with every link resolved, when it lies inside the zoo's folder; else `ZooSpecError` naming `spec`.

    Args:
        path: str or Path. A path found for `spec`.
        spec: str. The `zoo:` spec, for the message.
    """
    base = Path(os.path.realpath(root()))
    real = Path(os.path.realpath(path))
    if real != base and base not in real.parents:
        raise _outside(spec, f"resolves to {str(real)!r}, outside the zoo folder {str(base)!r}")
    return real


def resolve(spec, default_file=None) -> Path:
    """The path a `zoo:` spec names: the model's folder (`zoo:NAME`) or one of its files (`zoo:NAME/FILE`).

    The spec is normalised and must stay inside the zoo's folder: `..`
    components, absolute paths and links (model folders or files) that lead
    outside it are refused.

    Args:
        spec: str. `zoo:NAME` or `zoo:NAME/FILE`.
        default_file: str or None. The file to return for `zoo:NAME` (e.g.
            `MODEL_FILE`) instead of the folder. Defaults to None (the folder).

    Returns:
        `pathlib.Path` of an existing folder or file inside the zoo folder.

    Raises:
        ZooSpecError: (a `ValueError`) `spec` does not start with `zoo:`, or
            it names something outside the zoo folder.
        FileNotFoundError: unknown model (the message lists the near matches
            and the shipped models) or a file the model's folder does not hold.

    Example:
    ```python
    import mtlzoo
    mtlzoo.zoo.resolve("zoo:driving_perception_lite/model_int8.tflite")
    ```
    """
    if not is_zoo_spec(spec):
        raise ZooSpecError(f"A zoo model is named 'zoo:NAME' (e.g. 'zoo:driving_perception_lite'); got {spec!r}.")
    import posixpath

    rest = spec[len(PREFIX):].replace("\\", "/")
    if rest.startswith("/") or (len(rest) > 1 and rest[1] == ":"):
        raise _outside(spec, "is an absolute path")
    if ".." in rest.split("/"):
        raise _outside(spec, "goes up with '..'")
    rest = posixpath.normpath(rest) if rest.strip("/") else ""
    name, _, file = rest.partition("/")
    if not name or name == ".":
        shipped = ", ".join(list_models()) or "none"
        raise ZooSpecError(f"Zoo spec {spec!r} names no model; use 'zoo:NAME' (shipped: {shipped}).")
    models = list_models()
    if name not in models:
        from mtlzoo.registry import suggestion

        shipped = ", ".join(models) if models else "none"
        raise FileNotFoundError(
            f"No zoo model {name!r}.{suggestion(name, models)} Shipped models: {shipped} (in {root()})."
        )
    folder = root() / name
    check_inside(folder, spec)
    file = file or default_file
    if not file:
        return folder
    path = folder / file
    if not os.path.lexists(path):
        files = sorted(p.name for p in folder.iterdir())
        from mtlzoo.registry import suggestion

        raise FileNotFoundError(
            f"Zoo model {name!r} has no file {file!r}.{suggestion(file, files)} Files: {', '.join(files)}."
        )
    check_inside(path, spec)
    return path


def model_card(name) -> str:
    """The text of a shipped model's `MODEL_CARD.md`.

    Example:
    ```python
    print(mtlzoo.zoo.model_card("driving_perception_lite"))
    ```
    """
    return (resolve(PREFIX + name) / "MODEL_CARD.md").read_text()

"""The stored single-task baselines file (`baselines.json`): its format and reader."""

from __future__ import annotations

import json
import os

__all__ = ["BASELINES_FORMAT", "read_baselines"]


BASELINES_FORMAT = "mtlzoo-baselines/1"


def read_baselines(baselines):
    if baselines is None:
        return None, None
    if isinstance(baselines, dict):
        return baselines, None
    from mtlzoo import zoo

    if zoo.is_zoo_spec(baselines):  # a shipped model's stored single-task baselines
        baselines = zoo.resolve(baselines, default_file="baselines.json")
    path = os.fspath(baselines)
    if os.path.isdir(path):
        path = os.path.join(path, "baselines.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No baselines file at {path!r}; create one with `mtlzoo baselines RECIPE --out DIR`.")
    try:
        with open(path) as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(
            f"{path!r} is not valid JSON ({e}): the baselines file is damaged (truncated?); "
            "write it again with `mtlzoo baselines RECIPE --out DIR`."
        ) from e
    if not isinstance(data, dict) or data.get("format") != BASELINES_FORMAT:
        data = data if isinstance(data, dict) else {}
        raise ValueError(
            f"{path} is not an mtlzoo baselines file (format {data.get('format')!r}, expected {BASELINES_FORMAT!r})."
        )
    return data, os.path.dirname(os.path.abspath(path))

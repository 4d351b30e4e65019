"""One task of a recipe (`TaskSpec`) and the key checks every recipe section shares (`RecipeError`)."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from mtlzoo.registry import HEADS, suggestion

__all__ = [
    "accepted_args",
    "BACKBONE_RESERVED",
    "check_keys",
    "check_name",
    "merge_task_settings",
    "RecipeError",
    "SHARING_RESERVED",
    "TaskSpec",
]


class RecipeError(ValueError):
    """A recipe or an override is invalid; the message names the key and the fix."""


SHARING_RESERVED = ("inputs", "backbone", "heads", "neck_channels")


BACKBONE_RESERVED = ("input_shape", "prefix", "weights")


def accepted_args(fn, reserved=()):
    params = inspect.signature(fn).parameters
    return [n for n, p in params.items() if n not in reserved and n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def check_keys(given, allowed, where):
    for key in given:
        if key not in allowed:
            raise RecipeError(
                f"{where}: unknown key {key!r}.{suggestion(key, allowed)} Valid keys: {', '.join(sorted(allowed))}."
            )


def check_name(registry, name, where, extra=()):
    if name in extra:
        return name
    if name not in registry:
        known = registry.list() + list(extra)
        raise RecipeError(f"{where}: unknown {registry.kind} {name!r}.{suggestion(name, known)} Known: {', '.join(sorted(known))}.")
    return registry.canonical(name)


@dataclasses.dataclass
class TaskSpec:
    """One task of a recipe: its head kind, head arguments and loss weight."""

    kind: str
    loss_weight: float = 1.0
    head_args: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, name: str, data: Any) -> "TaskSpec":
        where = f"task {name!r}"
        if not isinstance(data, dict):
            raise RecipeError(f"{where}: expected a mapping with at least `kind`, got {data!r}.")
        data = dict(data)
        if "kind" not in data:
            raise RecipeError(f"{where}: missing `kind` (one of {', '.join(HEADS.list())}).")
        kind = check_name(HEADS, data.pop("kind"), where)
        weight = data.pop("loss_weight", 1.0)
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            raise RecipeError(f"{where}: loss_weight must be a number, got {weight!r}.") from None
        if weight < 0 or weight != weight:
            raise RecipeError(f"{where}: loss_weight must be >= 0, got {weight}.")
        head_cls = HEADS.get(kind)
        allowed = accepted_args(head_cls.__init__) + ["kind", "loss_weight"]
        check_keys(data, allowed, where)
        try:
            head_cls(**data)
        except (TypeError, ValueError) as e:
            raise RecipeError(f"{where}: {e}") from None
        return cls(kind=kind, loss_weight=weight, head_args=data)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "loss_weight": self.loss_weight, **self.head_args}


def merge_task_settings(data, tasks, recipe_name, add):
    """`add_tasks` (new tasks, full specs) or `update_tasks` (settings merged into existing tasks)."""
    what = "add_tasks" if add else "update_tasks"
    if not isinstance(tasks, dict):
        raise RecipeError(f"override {what}= must map task names to task settings, got {type(tasks).__name__}.")
    for t, settings in tasks.items():
        if not isinstance(settings, dict):
            raise RecipeError(f"override {what}={{{t!r}: ...}}: the settings must be a mapping, got {settings!r}.")
        if add and t in data["tasks"]:
            raise RecipeError(
                f"override add_tasks=: recipe {recipe_name!r} already has a task {t!r}; change it with "
                f"update_tasks={{{t!r}: {{...}}}} or choose another name."
            )
        if not add and t not in data["tasks"]:
            raise RecipeError(
                f"override update_tasks=: recipe {recipe_name!r} has no task {t!r}.{suggestion(t, data['tasks'])} "
                f"Its tasks: {', '.join(data['tasks'])}. Add a new task with add_tasks={{{t!r}: {{'kind': ...}}}}."
            )
        data["tasks"][t] = dict(settings) if add else {**data["tasks"][t], **settings}

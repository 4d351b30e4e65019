"""One registry mechanism for every named component of mtlzoo.

Recipes, backbones, sharing builders, heads, losses, metrics, weightings and
aggregators are all looked up by name through a `Registry`. Components register
themselves with a decorator in their own file; importing `mtlzoo` imports
those files, so everything is registered once the package is imported.
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Callable, Iterator


class UnknownNameError(KeyError, ValueError):
    """Raised when a registry has no entry of the requested name.

    Subclasses both `KeyError` (it is a failed lookup) and `ValueError` (it is
    usually bad user input), so either can be caught.
    """

    def __str__(self):  # KeyError would otherwise repr() the message.
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(ValueError):
    """Raised when a name is registered twice in one registry."""


def near_matches(name: str, candidates, n: int = 3) -> list[str]:
    """Returns up to `n` candidates close to `name` (case-insensitive)."""
    candidates = list(candidates)
    lowered = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(str(name).lower(), list(lowered), n=n, cutoff=0.5)
    # Also suggest names that contain the query or are contained in it.
    for c in candidates:
        low = c.lower()
        q = str(name).lower()
        if (q and (q in low or low in q)) and lowered.get(low) not in [lowered[h] for h in hits]:
            hits.append(low)
    return [lowered[h] for h in hits][:n]


def suggestion(name: str, candidates) -> str:
    """A ' Did you mean ...?' sentence, or '' when nothing is close."""
    hits = near_matches(name, candidates)
    if not hits:
        return ""
    return " Did you mean " + " or ".join(repr(h) for h in hits) + "?"


class Registry:
    """A name -> component table with decorator registration.

    Args:
        kind: str. What the registry holds ("backbone", "aggregator", ...),
            used in error messages.

    Example:
    ```python
    from mtlzoo.registry import Registry
    SHAPES = Registry("shape")

    @SHAPES.register("square")
    def square(side):
        return side * side

    SHAPES.get("square")(3)     # 9
    SHAPES.get("sqare")         # UnknownNameError: ... Did you mean 'square'?
    ```
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str | None = None, *, aliases=(), obj: Any = None) -> Callable:
        """Registers a component under `name` (default: its `__name__`).

        Use as a decorator (`@REG.register("name")`) or directly with `obj=`.
        Registering a name (or alias) that exists already is an error.
        """

        def decorator(component):
            key = name or getattr(component, "name", None) or component.__name__
            for k in (key, *aliases):
                if k in self._entries or k in self._aliases:
                    raise DuplicateNameError(
                        f"A {self.kind} named {k!r} is registered already "
                        f"({self._describe(self.get(k))}). Pick another name, or "
                        f"call `unregister({k!r})` first to replace it."
                    )
            self._entries[key] = component
            for alias in aliases:
                self._aliases[alias] = key
            return component

        if obj is not None:
            return decorator(obj)
        return decorator

    def unregister(self, name: str) -> None:
        """Removes `name` (and its aliases) from the registry."""
        key = self._aliases.get(name, name)
        self._check(key)
        del self._entries[key]
        self._aliases = {a: k for a, k in self._aliases.items() if k != key}

    def _check(self, name):
        if name not in self._entries:
            known = sorted(self._entries) + sorted(self._aliases)
            raise UnknownNameError(
                f"Unknown {self.kind} {name!r}.{suggestion(name, known)} "
                f"Known {self.kind}s: {', '.join(sorted(self._entries)) or '(none)'}."
            )

    def canonical(self, name: str) -> str:
        """The registered name for `name` or one of its aliases."""
        if not isinstance(name, str):
            raise TypeError(f"A {self.kind} name must be a string, got {type(name).__name__}: {name!r}.")
        key = self._aliases.get(name, name)
        self._check(key)
        return key

    def get(self, name: str) -> Any:
        """Returns the component registered as `name`; unknown names list near matches."""
        return self._entries[self.canonical(name)]

    def create(self, name: str, **kwargs) -> Any:
        """Instantiates the class registered as `name` (case-insensitive) with `kwargs`.

        An argument its constructor does not take is a `TypeError` that names
        it, suggests the near match and lists the accepted ones.
        """
        import inspect

        if isinstance(name, str) and name not in self and name.lower() in self:
            name = name.lower()
        cls = self.get(name)
        params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        unknown = [k for k in kwargs if k not in params]
        if unknown:
            raise TypeError(
                f"{self.kind.capitalize()} {self.canonical(name)!r} has no hyperparameter {unknown[0]!r}."
                f"{suggestion(unknown[0], params)} Its hyperparameters: {', '.join(params) or '(none)'}."
            )
        return cls(**kwargs)

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching the shell-style `pattern`."""
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self):
        return f"Registry({self.kind!r}, {self.list()})"

    @staticmethod
    def _describe(component):
        module = getattr(component, "__module__", None)
        qual = getattr(component, "__qualname__", None) or type(component).__name__
        return f"{module}.{qual}" if module else qual


RECIPES = Registry("recipe")
BACKBONES = Registry("backbone")
SHARING = Registry("sharing mode")
HEADS = Registry("task kind")
LOSSES = Registry("loss")
METRICS = Registry("metric")
WEIGHTINGS = Registry("weighting")
AGGREGATORS = Registry("aggregator")

"""The package reads top-down: one-way floors, no import circles, no borrowed private names, small rooms.

Each module of `mtlzoo` sits on a floor (the `FLOORS` table below, matched by the
longest dotted prefix). A module imports only from its own floor or below. The
import graph is read with `ast` from the source files, never by importing them:
module-level and function-level imports alike, `from mtlzoo import x` resolved
to the submodule `mtlzoo.x`, and the lazy names of the root package
(`mtlzoo.load`, `mtlzoo.train`, ...) resolved to the module that defines them.

Importing `a.b.c` runs `a/__init__.py` and `a/b/__init__.py` first, so every
submodule also depends on its parent packages (except the root `mtlzoo`,
whose `__init__` imports nothing eagerly: `test_root_package_stays_lazy`).
A package `__init__` may import its own submodules (re-exports); that is the
only circle allowed.

`docs/architecture.md` explains the floors and how to add a component. To
place a new module, add its path to `FLOORS`; to keep a long file, add it to
`LONG_FILES` with the reason it is one algorithm.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = "mtlzoo"

FLOOR_NAMES = {1: "core", 2: "parts", 3: "model", 4: "assembly", 5: "workflows", 6: "tools"}

# Module (or package prefix) -> floor. The longest matching dotted prefix wins:
# "mtlzoo.zoo" covers the package and "mtlzoo.zoo.publishing" overrides it.
FLOORS = {
    # 1 core: names, paths and layers that know nothing about tasks.
    "mtlzoo.registry": 1,
    "mtlzoo.flops": 1,
    "mtlzoo.fileio": 1,
    "mtlzoo.validation": 1,
    "mtlzoo.deprecation": 1,
    "mtlzoo.layers": 1,
    "mtlzoo.zoo": 1,  # zoo/__init__ + zoo/lookup: `zoo:NAME` -> path, nothing else
    # 2 parts: one kind of component per folder, each registered by name.
    "mtlzoo.backbones": 2,
    "mtlzoo.heads": 2,
    "mtlzoo.losses": 2,
    "mtlzoo.metrics": 2,  # streaming Keras metrics, NumPy evaluation metrics, delta_m
    "mtlzoo.metrics_delta": 2,  # old path, forwards to mtlzoo.metrics
    "mtlzoo.aggregators": 2,
    "mtlzoo.weighting": 2,
    "mtlzoo.gradient_hook": 2,
    "mtlzoo.distribute": 2,
    "mtlzoo.step_state": 2,
    "mtlzoo.optimizers": 2,  # Keras optimizers with fused TensorFlow updates
    "mtlzoo.schedules": 2,  # learning-rate schedules named by a recipe's optimizer
    # 3 model: the Keras contract and the plumbing it delegates to.
    "mtlzoo.model": 3,
    "mtlzoo.training_hooks": 3,
    # 4 assembly: parts put together into a model, a recipe, a dataset.
    "mtlzoo.sharing": 4,
    "mtlzoo.neck": 4,
    "mtlzoo.recipe": 4,
    "mtlzoo.data": 4,
    "mtlzoo.task_spec": 4,  # TaskSpec and the recipe key checks (split from recipe.py)
    "mtlzoo.recipe_building": 4,  # the seeding and dtype policy of a recipe's build (split from recipe.py)
    "mtlzoo.api": 4,  # build/load: the workflows above load models too
    # 5 workflows: what a user runs on a model.
    "mtlzoo.training": 5,
    "mtlzoo.evaluation": 5,
    "mtlzoo.export": 5,
    "mtlzoo.edge": 5,
    "mtlzoo.predict": 5,
    "mtlzoo.tuning": 5,
    "mtlzoo.diagnostics": 5,
    "mtlzoo.testing": 5,
    # 6 tools: compose workflows; nothing imports them.
    "mtlzoo.zoo.publishing": 6,
    "mtlzoo.zoo.__main__": 6,
    "mtlzoo.bench": 6,
    "mtlzoo.cli": 6,
    "mtlzoo.cli_training": 6,  # old path, forwards to mtlzoo.cli.training
    "mtlzoo.cli_tune": 6,  # old path, forwards to mtlzoo.cli.tune
    "mtlzoo": 6,  # the lazy public face (mtlzoo/__init__.py) only: not a default for new modules
}

MAX_LINES = 450

# Files allowed over MAX_LINES: one cohesive algorithm each, with the reason.
LONG_FILES = {
    "mtlzoo/data/synthetic_driving/renderer.py":
        "one procedural renderer: scene sampling and the ray-cast of walls, road and objects share its geometry",
    "mtlzoo/data/cityscapes_tfds.py":
        "one dataset: the Cityscapes label table, disparity-to-depth and the decoder shared by its two readers",
}


# ---------------------------------------------------------------------------- the graph
class ImportGraph:
    """Modules of one package and the imports between them, read with `ast`.

    Attributes:
        modules: dict module name -> (path, is_package).
        edges: dict module -> {imported module: "module"|"function"|"attribute"|"parent"}.
        private: list of (module, imported module, name, line) for `_name`s
            taken from another module.
    """

    def __init__(self, root, package):
        self.root = pathlib.Path(root)
        self.package = package
        self.modules = {}
        base = self.root / package
        for path in sorted(base.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(self.root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            self.modules[".".join(parts)] = (path, is_package)
        self.lazy = self._root_lazy_names()
        self.edges = {m: {} for m in self.modules}
        self.private = []
        for module in self.modules:
            self._read(module)

    # -- helpers
    def _root_lazy_names(self):
        """name -> module for the root package's `_LAZY` and `_SUBMODULES` tables (static)."""
        path, _ = self.modules[self.package]
        out = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) for t in node.targets):
                name = next(t.id for t in node.targets if isinstance(t, ast.Name))
                if name == "_LAZY":
                    out.update({k: v[0] for k, v in ast.literal_eval(node.value).items()})
                elif name == "_SUBMODULES":
                    out.update({k: f"{self.package}.{k}" for k in ast.literal_eval(node.value)})
        return out

    def owner(self, dotted):
        """The longest prefix of `dotted` that is a module of the package, or None."""
        while dotted:
            if dotted in self.modules:
                return dotted
            dotted = dotted.rpartition(".")[0]
        return None

    def _add(self, source, target, kind):
        if target is None or target == source:
            return
        if target == self.package:
            return  # the root is lazy: what it resolves to is added by name
        if self.edges[source].get(target) == "module":
            return  # a module-level import says the most
        self.edges[source][target] = kind

    def _private(self, source, target, name, line):
        if name.startswith("_") and not name.startswith("__") and target != source:
            self.private.append((source, target, name, line))

    def _read(self, module):
        path, is_package = self.modules[module]
        tree = ast.parse(path.read_text(), filename=str(path))
        # Parent packages run first (the root is lazy and left out).
        parent = module.rpartition(".")[0]
        while parent and parent != self.package:
            self._add(module, parent, "parent")
            parent = parent.rpartition(".")[0]
        aliases = {}  # local name -> module it names
        function_level = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                function_level.update(id(n) for n in ast.walk(node) if n is not node)
        for node in ast.walk(tree):
            kind = "function" if id(node) in function_level else "module"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] != self.package:
                        continue
                    self._add(module, self.owner(alias.name), kind)
                    if alias.asname:
                        aliases[alias.asname] = self.owner(alias.name)
                    else:
                        aliases[self.package] = self.package
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source.split(".")[0] != self.package:
                    continue
                for alias in node.names:
                    full = f"{source}.{alias.name}"
                    if full in self.modules:  # `from mtlzoo import zoo`: the submodule
                        target = full
                        aliases[alias.asname or alias.name] = full
                    elif source == self.package and alias.name in self.lazy:
                        target = self.lazy[alias.name]  # `from mtlzoo import train`
                    else:
                        target = self.owner(source)
                        self._private(module, target, alias.name, node.lineno)
                    self._add(module, target, kind)
        # Attribute use through a module name: `mtlzoo.load(...)`, `mtlzoo.data._reader`, `zoo._fmt`.
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            chain, value = [node.attr], node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if not isinstance(value, ast.Name) or value.id not in aliases:
                continue
            chain.reverse()
            target = aliases[value.id]
            rest = chain
            if target == self.package and chain[0] in self.lazy:
                target, rest = self.lazy[chain[0]], chain[1:]
            while rest and f"{target}.{rest[0]}" in self.modules:
                target, rest = f"{target}.{rest[0]}", rest[1:]
            if target != self.package:
                if target not in self.edges[module]:
                    self._add(module, target, "attribute")
                if rest:
                    self._private(module, target, rest[0], node.lineno)

    # -- queries
    def floor(self, module, table):
        """The floor of the longest prefix of `module` in `table`; the root's entry is for the root only."""
        parts = module.split(".")
        for i in range(len(parts), 0, -1):
            key = ".".join(parts[:i])
            if key in table and (key != self.package or module == self.package):
                return table[key]
        return None

    def cycles(self):
        """Strongly connected components of more than one module.

        A package's edges to its own submodules (re-exports) are left out:
        they close a circle with every submodule's edge to its parent.
        """
        graph = {
            m: [t for t in targets if not t.startswith(m + ".")]
            for m, targets in self.edges.items()
        }
        index, low, stack, on_stack, out = {}, {}, [], set(), []
        counter = [0]

        def visit(v):  # iterative Tarjan
            work = [(v, iter(graph[v]))]
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on_stack.add(v)
            while work:
                node, children = work[-1]
                for w in children:
                    if w not in index:
                        index[w] = low[w] = counter[0]
                        counter[0] += 1
                        stack.append(w)
                        on_stack.add(w)
                        work.append((w, iter(graph[w])))
                        break
                    if w in on_stack:
                        low[node] = min(low[node], index[w])
                else:
                    work.pop()
                    if work:
                        low[work[-1][0]] = min(low[work[-1][0]], low[node])
                    if low[node] == index[node]:
                        component = []
                        while True:
                            w = stack.pop()
                            on_stack.discard(w)
                            component.append(w)
                            if w == node:
                                break
                        if len(component) > 1:
                            out.append(sorted(component))

        for v in graph:
            if v not in index:
                visit(v)
        return out


@pytest.fixture(scope="module")
def graph():
    return ImportGraph(ROOT, PACKAGE)


def _where(graph, module):
    return graph.modules[module][0].relative_to(ROOT).as_posix()


# ---------------------------------------------------------------------------- the reader itself
def _write(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_graph_reader_finds_every_kind_of_import(tmp_path):
    _write(tmp_path, {
        "mtlzoo/__init__.py": '_LAZY = {"train": ("mtlzoo.work.run", "train")}\n_SUBMODULES = ("low",)\n',
        "mtlzoo/low.py": "def helper():\n    from mtlzoo import high\n    return high\n",
        "mtlzoo/high.py": "from mtlzoo.low import _secret\n",
        "mtlzoo/top.py": "import mtlzoo\nx = mtlzoo.train\n",
        "mtlzoo/work/__init__.py": "from mtlzoo.work.run import train\n",
        "mtlzoo/work/run.py": "import mtlzoo.low as low\ndef train():\n    return low._hidden\n",
    })
    g = ImportGraph(tmp_path, "mtlzoo")
    assert g.edges["mtlzoo.low"] == {"mtlzoo.high": "function"}  # `from pkg import module`, inside a function
    assert g.edges["mtlzoo.high"]["mtlzoo.low"] == "module"
    assert g.edges["mtlzoo.top"] == {"mtlzoo.work.run": "attribute"}  # `mtlzoo.train`, a lazy name of the root
    assert g.edges["mtlzoo.work.run"] == {"mtlzoo.work": "parent", "mtlzoo.low": "module"}
    assert ("mtlzoo.high", "mtlzoo.low", "_secret", 1) in g.private
    assert any(p[:3] == ("mtlzoo.work.run", "mtlzoo.low", "_hidden") for p in g.private)
    assert g.cycles() == [["mtlzoo.high", "mtlzoo.low"]]  # the package -> own submodule edge is allowed
    assert g.floor("mtlzoo.work.run", {"mtlzoo": 6, "mtlzoo.work": 5}) == 5
    assert g.floor("mtlzoo.top", {"mtlzoo": 6, "mtlzoo.work": 5}) is None  # a new module must be placed


# ---------------------------------------------------------------------------- the rules
def test_every_module_has_a_floor(graph):
    missing = sorted(m for m in graph.modules if graph.floor(m, FLOORS) is None)
    assert not missing, f"Modules without a floor: {missing}. Add each to FLOORS in tests/test_architecture.py."


def test_imports_point_down(graph):
    upward = []
    for module, targets in sorted(graph.edges.items()):
        floor = graph.floor(module, FLOORS)
        for target, kind in sorted(targets.items()):
            target_floor = graph.floor(target, FLOORS)
            if floor is not None and target_floor is not None and target_floor > floor:
                upward.append(
                    f"{module} ({floor} {FLOOR_NAMES[floor]}) imports {target} "
                    f"({target_floor} {FLOOR_NAMES[target_floor]}, {kind}-level)"
                )
    assert not upward, (
        "Lower floors must not import higher ones; move the helper down to a floor both users reach:\n  "
        + "\n  ".join(upward)
    )


def test_no_import_cycles(graph):
    cycles = graph.cycles()
    described = []
    for component in cycles:
        inside = set(component)
        arrows = [f"{m} -> {t}" + (" (its package __init__ runs first)" if kind == "parent" else f" ({kind}-level)")
                  for m in component for t, kind in sorted(graph.edges[m].items())
                  if t in inside and not t.startswith(m + ".")]
        described.append(", ".join(component) + "\n      " + "\n      ".join(arrows))
    assert not cycles, "Import circles (each needs one arrow removed):\n  " + "\n  ".join(described)


def test_no_private_names_across_modules(graph):
    uses = [f"{_where(graph, m)}:{line} takes {name} from {t}" for m, t, name, line in sorted(graph.private)]
    assert not uses, (
        "Private names used from another module: make the name public where it lives "
        "(or move it to the floor both users share):\n  " + "\n  ".join(uses)
    )


def test_no_oversized_files(graph):
    too_long = []
    for module, (path, _) in sorted(graph.modules.items()):
        where = path.relative_to(ROOT).as_posix()
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES and where not in LONG_FILES:
            too_long.append(f"{where}: {lines} lines")
    assert not too_long, (
        f"Files over {MAX_LINES} lines hold more than one purpose: split them by purpose, or list a cohesive "
        "algorithm in LONG_FILES with its reason:\n  " + "\n  ".join(too_long)
    )


def test_long_files_allowlist_is_current():
    for where, reason in LONG_FILES.items():
        assert (ROOT / where).is_file(), f"LONG_FILES names {where}, which does not exist: remove the entry."
        assert len(reason) > 20, f"LONG_FILES[{where!r}] needs a reason (why it is one algorithm)."


def test_root_package_stays_lazy():
    tree = ast.parse((ROOT / PACKAGE / "__init__.py").read_text())
    eager = [
        f"line {node.lineno}"
        for node in ast.walk(tree)
        if (isinstance(node, ast.Import) and any(a.name.split(".")[0] == PACKAGE for a in node.names))
        or (isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == PACKAGE))
    ]
    assert not eager, (
        f"mtlzoo/__init__.py imports mtlzoo modules ({', '.join(eager)}); expose names through _LAZY so that "
        "`import mtlzoo` stays cheap and every floor can import it."
    )

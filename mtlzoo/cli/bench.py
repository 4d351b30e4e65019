"""`mtlzoo bench NAME`: the benchmarks."""

from __future__ import annotations


BENCHMARKS = ("data", "step", "latency", "scale", "quality", "methods", "claims")


# `mtlzoo bench all`: the ones that finish in minutes (methods and claims take hours; they resume, run them by
# name).
QUICK_BENCHMARKS = ("data", "step", "latency", "scale", "quality")


def cmd_bench(args):
    import importlib

    from mtlzoo.recipe import parse_cli_overrides

    names = QUICK_BENCHMARKS if args.name == "all" else (args.name,)
    options = parse_cli_overrides(args.options)
    for name in names:
        module = importlib.import_module(f"mtlzoo.bench.{name}")
        print(f"== mtlzoo bench {name} ==")
        module.run(dict(options))
    return 0

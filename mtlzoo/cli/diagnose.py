"""`mtlzoo diagnose RECIPE`: the negative-transfer report."""

from __future__ import annotations


def cmd_diagnose(args):
    from mtlzoo.diagnostics import run_diagnose

    return run_diagnose(args)

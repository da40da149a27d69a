"""Helpers shared by the frontend tests: parse a source and pick its kernels or loops."""

from __future__ import annotations

from kernels.engine import ir
from kernels.engine.frontend import parse_file


def kernels_of(source: str, filename: str = "t.f90") -> dict[str, ir.Kernel]:
    return {k.name: k for k in parse_file(source, filename=filename).kernels}


def only(source: str, filename: str = "t.f90") -> ir.Kernel:
    (k,) = parse_file(source, filename=filename).kernels
    return k


def loops(stmts) -> list[ir.Loop]:
    return [s for s in ir.walk(stmts) if isinstance(s, ir.Loop)]

"""Fortran -> Python names are one-to-one: keywords, builtins, module names and `_` suffixes."""

from __future__ import annotations

import ast
import builtins
import keyword
from pathlib import Path

from kernels.engine import translate_source
from kernels.engine.backends.common import py_name

FIXTURE = Path(__file__).parents[1] / "fixtures" / "fortran" / "python_name_clashes.f90"


def test_no_two_fortran_names_become_one_python_name():
    bases = ["np", "range", "lambda", "sum", "x", "math", "cuda", "print", "match", "prange"]
    names = [b + "_" * k for b in bases for k in range(4)]
    mapped = [py_name(n) for n in names]
    assert len(set(mapped)) == len(names)
    for python in mapped:
        assert python.isidentifier() and not keyword.iskeyword(python)
        assert python not in dir(builtins)


def test_ordinary_names_are_kept():
    assert [py_name(n) for n in ("a", "u_new", "x1")] == ["a", "u_new", "x1"]


def test_a_kernel_with_clashing_argument_names_gives_valid_distinct_parameters():
    result = translate_source(FIXTURE.read_text(), filename=FIXTURE.name, sizes={"n": 5})
    (kernel,) = result.kernels
    assert kernel.status == "verified", (kernel.diagnostics, kernel.notes)
    tree = ast.parse(kernel.code)
    entry = next(f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "clash")
    params = [a.arg for a in entry.args.args]
    assert params == ["n", "range_", "range__", "np_", "np__", "lambda_", "sum__", "x"]

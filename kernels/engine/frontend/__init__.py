"""Frontend: Fortran source -> fparser2 parse tree -> IR kernels.

One module per job: :mod:`.parse` (preprocess and parse), :mod:`.constants` (constant folding),
:mod:`.statements` (the statement visitor), :mod:`.units` (program units to kernels). Array
lowering is the IR -> IR pass in :mod:`kernels.engine.lowering`. Nothing here imports a backend.
"""

from kernels.engine.frontend.constants import const_value
from kernels.engine.frontend.parse import (
    ParsedFile,
    has_directives,
    is_fixed_form,
    needs_preprocessing,
    preprocess,
    realign_lines,
)
from kernels.engine.frontend.units import parse_file, parse_project

__all__ = [
    "ParsedFile",
    "const_value",
    "has_directives",
    "is_fixed_form",
    "needs_preprocessing",
    "parse_file",
    "parse_project",
    "preprocess",
    "realign_lines",
]

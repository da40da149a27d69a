"""fortranspire's translator: Fortran kernels -> numba CPU / numba.cuda code, verified against gfortran.

Pure Python, no Django import. Entry points (see pipeline.py):
``find_kernels(source, filename=...)`` and ``translate_source(source, ...)``, and for projects of
several files (:mod:`kernels.engine.project`) ``find_project_kernels`` / ``translate_project``.
"""

from kernels.engine.pipeline import (
    find_kernels,
    find_project_kernels,
    translate_project,
    translate_source,
)

__all__ = ["find_kernels", "find_project_kernels", "translate_project", "translate_source"]

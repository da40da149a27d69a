"""fortranspire's translator: Fortran kernels -> numba CPU / numba.cuda code, verified against gfortran.

Pure Python, no Django import. Entry points (see pipeline.py):
``find_kernels(source, filename=...)`` and ``translate_source(source, ...)``.
"""

from kernels.engine.pipeline import find_kernels, translate_source

__all__ = ["find_kernels", "translate_source"]

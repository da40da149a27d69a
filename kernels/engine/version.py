"""The engine's version: the one value that invalidates every stored proof when the engine changes.

Bump ``ENGINE_VERSION`` whenever a change could alter what the engine produces or concludes for
the same input: the frontend, analysis, a backend's code, the numba options, the verification
harness, the tolerances or the input generator. Two things are keyed by it:

- the per-tenant result cache (``kernels.result_cache``): a stored verified run answers a repeat
  request only when it was produced by the same engine version;
- the per-tenant numba cache directories (compiled machine code of generated ports), which live
  under a directory named after it, so an upgrade starts from an empty cache.
"""

ENGINE_VERSION = "2026.12.1"

"""The one child-process harness: runs inside the sandbox for verification and for profiling.

It is copied into each run's work directory and executed there as
``python -I fsp_harness.py SPEC.json`` with only numpy (and numba for ports) importable: it must
never import the project (the project's source is not visible in the sandbox). The server
imports it too, for :func:`make_inputs` (one definition of the inputs) and :func:`install`.

A spec is JSON:

- ``task``: ``"run"`` (one call, outputs saved to ``output`` as .npz, ``{"elapsed_s"}`` printed
  as the last stdout line), ``"time"`` (each variant timed ``warmups + repeats`` times from
  fresh inputs, ``{"variants": {name: {"times": [...]} | {"error": ...}}}`` written to
  ``output`` as JSON) or ``"stream"`` (a STREAM-like copy/triad, figures written to ``output``);
- ``seed`` and ``args``: ``[{name, dtype, base, array, output, shape, value}]``; inputs are drawn
  here, from the seed, so the server never allocates them (``value`` is set for scalars the
  caller fixed: sizes and given scalars);
- ``result``: the function result's dtype, or null for a subroutine;
- ``run``: ``mode`` ``"fortran"`` (``library``, ``symbol``: verify's bind(C) wrapper, every
  argument by reference, logicals as int32, complex scalars through a one-element array, the
  result buffer last) or ``"python"`` (``module``, ``entry``: arrays updated in place, scalars
  returned, the result first; ``numba_cache``: keep compiled code in ``$NUMBA_CACHE_DIR``; a
  numba entry is compiled before the call and ``compile_s``, ``cache_hits`` are printed too);
- ``time``: ``variants`` ``{name: {library, symbol} | {module, entry}}``, ``repeats``,
  ``warmups``; the variant ``numba_cuda`` is synchronised after each call.

Input values: reals uniform in [0.5, 1.5], integer arrays in [1, 9], logicals random; see
:mod:`kernels.engine.verify` for why.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

import numpy as np

HARNESS_FILE = "fsp_harness.py"
REAL_RANGE = (0.5, 1.5)
INT_ARRAY_RANGE = (1, 10)  # numpy's upper bound is exclusive: values 1..9


# --------------------------------------------------------------------------------------------
# Inputs


def _random_array(rng, base, dtype, shape):
    if base == "real":
        data = rng.uniform(*REAL_RANGE, size=shape)
    elif base == "integer":
        data = rng.integers(*INT_ARRAY_RANGE, size=shape)
    elif base == "logical":
        data = rng.random(size=shape) < 0.5
    elif base == "complex":
        data = rng.uniform(*REAL_RANGE, size=shape) + 1j * rng.uniform(*REAL_RANGE, size=shape)
    else:
        raise ValueError(f"no inputs for type {base!r}")
    return np.asfortranarray(np.asarray(data).astype(dtype))


def make_inputs(args, seed):
    """Reproducible inputs for every argument (F-ordered arrays, numpy scalars of the right kind).

    ``args`` are the spec's argument dicts; the draws happen in argument order, so the same
    spec and seed always give the same values.
    """
    rng = np.random.default_rng(seed)
    values = {}
    for a in args:
        dtype = np.dtype(a["dtype"])
        if a["array"]:
            values[a["name"]] = _random_array(rng, a["base"], dtype, tuple(a["shape"]))
        elif a.get("value") is not None:
            values[a["name"]] = dtype.type(a["value"])
        else:
            values[a["name"]] = dtype.type(_random_array(rng, a["base"], dtype, ()).item())
    return values


def input_bytes(args):
    """Bytes the arrays of ``args`` take (what one set of inputs allocates)."""
    total = 0
    for a in args:
        if a["array"]:
            n = 1
            for extent in a["shape"]:
                n *= int(extent)
            total += n * np.dtype(a["dtype"]).itemsize
    return total


def install(workdir):
    """Copy this file into ``workdir`` (the sandbox sees only that directory); returns its name."""
    shutil.copyfile(os.path.abspath(__file__), os.path.join(os.fspath(workdir), HARNESS_FILE))
    return HARNESS_FILE


# --------------------------------------------------------------------------------------------
# Calling the two sides


def _fresh(args, base):
    """Copies of the inputs for one call: in-place updates never leak into the next call."""
    values = []
    for a in args:
        v = base[a["name"]]
        values.append(np.asfortranarray(v.copy()) if a["array"] else np.dtype(a["dtype"]).type(v))
    return values


def _fortran_call(fn, args, values, result):
    """Arguments for the bind(C) wrapper; returns (thunk, kept objects in argument order)."""
    import ctypes

    ctypes_of = {
        "int8": ctypes.c_int8,
        "int16": ctypes.c_int16,
        "int32": ctypes.c_int32,
        "int64": ctypes.c_int64,
        "float32": ctypes.c_float,
        "float64": ctypes.c_double,
        "bool": ctypes.c_int32,
    }
    keep, ptrs = [], []
    for a, v in zip(args, values, strict=True):
        if a["array"]:
            arr = np.asfortranarray(v.astype(np.int32) if a["dtype"] == "bool" else v)
            keep.append(arr)
            ptrs.append(arr.ctypes.data_as(ctypes.c_void_p))
        elif a["dtype"].startswith("complex"):
            arr = np.array([v], dtype=a["dtype"])
            keep.append(arr)
            ptrs.append(arr.ctypes.data_as(ctypes.c_void_p))
        else:
            c = ctypes_of[a["dtype"]](int(v) if a["dtype"] == "bool" else v.item())
            keep.append(c)
            ptrs.append(ctypes.byref(c))
    if result:
        res = np.zeros(1, dtype=np.int32 if result == "bool" else result)
        keep.append(res)
        ptrs.append(res.ctypes.data_as(ctypes.c_void_p))
    return (lambda: fn(*ptrs)), keep


def _load_fortran(library, symbol):
    import ctypes

    lib = ctypes.CDLL(os.path.abspath(library))
    fn = getattr(lib, symbol)
    fn.restype = None
    return fn


def _load_python(module_path, entry, name="fsp_generated"):
    import importlib.util

    modspec = importlib.util.spec_from_file_location(name, module_path)
    mod = importlib.util.module_from_spec(modspec)
    sys.modules[name] = mod  # numba resolves a cached function's module by name
    modspec.loader.exec_module(mod)
    return getattr(mod, entry)


def _compile_for(fn, values, use_cache):
    """Compile a numba CPU dispatcher for exactly the types of this call.

    Returns (wall seconds, CPU seconds, cache hits): CPU time tells options apart on a busy
    machine, where wall time mostly measures the other processes.

    Compiling apart from the call lets the report tell compile time from run time. With
    ``use_cache`` (the translator's own code only: the server decides) every jitted function of
    the module keeps its machine code in ``$NUMBA_CACHE_DIR`` and loads it from there next time.
    Anything that is not a CPU dispatcher (a CUDA host driver) compiles during the call instead.
    """
    if not (hasattr(fn, "py_func") and hasattr(fn, "compile") and hasattr(fn, "stats")):
        return 0.0, 0.0, 0
    import numba

    if use_cache:
        for obj in list(fn.py_func.__globals__.values()):
            if hasattr(obj, "enable_caching") and hasattr(obj, "py_func"):
                obj.enable_caching()
    t0, c0 = time.perf_counter(), time.process_time()
    fn.compile(tuple(numba.typeof(v) for v in values))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, sum(fn.stats.cache_hits.values())


def _fortran_outputs(args, keep, result):
    out = {}
    for a, obj in zip(args, keep, strict=False):
        if not a["output"]:
            continue
        if a["array"]:
            val = obj.astype(bool) if a["dtype"] == "bool" else obj
        elif isinstance(obj, np.ndarray):
            val = obj[0]
        else:
            val = np.array(obj.value, dtype=a["dtype"])
        out[a["name"]] = np.asarray(val)
    if result:
        r = keep[-1][0]
        out["__result__"] = np.asarray(bool(r) if result == "bool" else r)
    return out


def _python_outputs(args, call, returned, result):
    expected = (["__result__"] if result else []) + [
        a["name"] for a in args if a["output"] and not a["array"]
    ]
    if len(expected) == 0:
        values = []
    elif len(expected) == 1 and not isinstance(returned, (tuple, list)):
        values = [returned]
    else:
        if not isinstance(returned, (tuple, list)) or len(returned) != len(expected):
            sys.stderr.write(
                f"generated code returned {type(returned).__name__!r}, expected "
                f"{len(expected)} values ({', '.join(expected)})\n"
            )
            sys.exit(3)
        values = list(returned)
    out = {}
    for name, v in zip(expected, values, strict=True):
        if v is None:
            sys.stderr.write(f"generated code returned None for {name}\n")
            sys.exit(3)
        dtype = (
            result if name == "__result__" else [a for a in args if a["name"] == name][0]["dtype"]
        )
        out[name] = np.asarray(v).astype(dtype)
    for a, arr in zip(args, call, strict=True):
        if a["output"] and a["array"]:
            out[a["name"]] = arr
    return out


# --------------------------------------------------------------------------------------------
# Tasks


def task_run(spec):
    compile_s, compile_cpu_s, cache_hits = 0.0, 0.0, 0
    args = spec["args"]
    base = make_inputs(args, spec["seed"])
    values = _fresh(args, base)
    if spec["mode"] == "fortran":
        fn = _load_fortran(spec["library"], spec["symbol"])
        thunk, keep = _fortran_call(fn, args, values, spec["result"])
        t0 = time.perf_counter()
        thunk()
        elapsed = time.perf_counter() - t0
        out = _fortran_outputs(args, keep, spec["result"])
    else:
        fn = _load_python(spec["module"], spec["entry"])
        compile_s, compile_cpu_s, cache_hits = _compile_for(
            fn, values, spec.get("numba_cache", False)
        )
        t0 = time.perf_counter()
        returned = fn(*values)
        elapsed = time.perf_counter() - t0
        out = _python_outputs(args, values, returned, spec["result"])
    np.savez(spec["output"], **out)
    print(
        json.dumps(
            {
                "elapsed_s": elapsed,
                "compile_s": compile_s,
                "compile_cpu_s": compile_cpu_s,
                "cache_hits": cache_hits,
            }
        )
    )


def task_time(spec):
    args = spec["args"]
    base = make_inputs(args, spec["seed"])
    repeats = int(spec["repeats"])
    warmups = int(spec.get("warmups", 1))
    result = spec.get("result")
    out = {"variants": {}}

    def time_calls(prepare, sync=None):
        # Only the call itself is timed: copying inputs and building ctypes arguments are not.
        times = []
        for rep in range(warmups + repeats):
            thunk = prepare(_fresh(args, base))
            t0 = time.perf_counter()
            thunk()
            if sync is not None:
                sync()
            dt = time.perf_counter() - t0
            if rep >= warmups:
                times.append(dt)
        return times

    for variant, info in spec["variants"].items():
        try:
            if "library" in info:
                fn = _load_fortran(info["library"], info["symbol"])
                times = time_calls(lambda values, fn=fn: _fortran_call(fn, args, values, result)[0])
            else:
                entry = _load_python(info["module"], info["entry"], "fsp_" + variant)
                sync = None
                if variant == "numba_cuda":
                    from numba import cuda

                    sync = cuda.synchronize
                times = time_calls(lambda values, entry=entry: lambda: entry(*values), sync)
            out["variants"][variant] = {"times": times}
        except Exception as exc:  # one failing variant must not hide the others
            out["variants"][variant] = {"error": (f"{type(exc).__name__}: {exc}")[:500]}
    with open(spec["output"], "w") as fh:
        json.dump(out, fh)


def task_stream(spec):
    import statistics

    import numba

    @numba.njit(cache=False)
    def copy_serial(a, c):
        for i in range(a.size):
            c[i] = a[i]

    @numba.njit(cache=False)
    def triad_serial(a, b, c, s):
        for i in range(a.size):
            a[i] = b[i] + s * c[i]

    @numba.njit(parallel=True, cache=False)
    def copy_parallel(a, c):
        for i in numba.prange(a.size):
            c[i] = a[i]

    @numba.njit(parallel=True, cache=False)
    def triad_parallel(a, b, c, s):
        for i in numba.prange(a.size):
            a[i] = b[i] + s * c[i]

    n = int(spec["elements"])
    repeats = int(spec["repeats"])
    a = np.full(n, 1.0)
    b = np.full(n, 2.0)
    c = np.zeros(n)
    out = {"elements": n, "array_mib": round(8 * n / (1 << 20), 1)}
    # STREAM's byte counts: copy moves 2 arrays, triad 3 (write-allocate traffic not counted).
    cases = {
        "copy_serial": (copy_serial, (a, c), 16),
        "triad_serial": (triad_serial, (a, b, c, 3.0), 24),
        "copy_parallel": (copy_parallel, (a, c), 16),
        "triad_parallel": (triad_parallel, (a, b, c, 3.0), 24),
    }
    for name, (fn, fargs, per_elem) in cases.items():
        fn(*fargs)  # warm-up: JIT compile and first touch
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(*fargs)
            times.append(time.perf_counter() - t0)
        best = min(times)
        med = statistics.median(times)
        # Like STREAM, the reference is the best rate; the median shows how noisy the machine is.
        out[name + "_gbs"] = round(per_elem * n / best / 1e9, 3)
        out[name + "_median_gbs"] = round(per_elem * n / med / 1e9, 3)
        out[name + "_spread_pct"] = round(100.0 * (max(times) - best) / med, 2)
    out["threads"] = numba.config.NUMBA_NUM_THREADS
    with open(spec["output"], "w") as fh:
        json.dump(out, fh)


TASKS = {"run": task_run, "time": task_time, "stream": task_stream}


def main(argv):
    with open(argv[1]) as fh:
        spec = json.load(fh)
    TASKS[spec["task"]](spec)


if __name__ == "__main__":
    main(sys.argv)

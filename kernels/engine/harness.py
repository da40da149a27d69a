"""The one child-process harness: runs inside the sandbox for verification and for profiling.

It is copied into each run's work directory and executed there as
``python -I fsp_harness.py SPEC.json`` with only numpy (and numba for ports) importable: it must
never import the project (the project's source is not visible in the sandbox). The server
imports it too, for :func:`make_inputs` (one definition of the inputs) and :func:`install`.
A port's harness is started ahead of its spec (``--wait``, see :func:`main`): it imports and
warms up numba while the server parses, then runs the spec it is given. Every task ends with
:func:`_exit_now`, which skips the interpreter's slow finalisation.

A spec is JSON:

- ``task``: ``"run"`` (one call, outputs saved to ``output`` as .npz, ``{"elapsed_s"}`` printed
  as the last stdout line), ``"time"`` (each variant timed ``warmups + repeats`` times from
  fresh inputs, ``{"variants": {name: {"times": [...]} | {"error": ...}}}`` written to
  ``output`` as JSON) or ``"stream"`` (a STREAM-like copy/triad, figures written to ``output``);
- ``seed`` and ``args``: ``[{name, dtype, base, array, output, shape, value, fill}]``; inputs
  are drawn here, from the seed, so the server never allocates them (``value`` is set for
  scalars the caller fixed: sizes and given scalars; ``fill`` for an array whose every element
  the caller fixed, a flag array choosing branches);
- ``selections`` (task ``run``, optional): a list of ``{name: value}``, one call each with those
  scalars (``value``) or arrays (``fill``) changed and everything else drawn as without them;
  call ``k`` writes its outputs to :func:`selection_path` ``(output, k)`` and, when
  ``coverage_file`` names the file the call leaves (the reference's loop counters, counted
  since the first call), moves it to ``selection_path(coverage_file, k)``. A call that crashes
  leaves the files of the calls before it;
- ``result``: the function result's dtype, or null for a subroutine;
- ``run``: ``mode`` ``"fortran"`` (``library``, ``symbol``: verify's bind(C) wrapper, every
  argument by reference, logicals as int32, complex scalars through a one-element array, the
  result buffer last) or ``"python"`` (``module``, ``entry``: arrays updated in place, scalars
  returned, the result first; ``numba_cache``: keep compiled code in ``$NUMBA_CACHE_DIR``; a
  numba entry is compiled before the call and ``compile_s``, ``cache_hits`` are printed too);
- ``time``: ``variants`` ``{name: {library, symbol} | {module, entry}}`` each with
  ``threads`` (the thread counts to time it at: ``numba.set_num_threads`` for numba, and
  ``omp_set_num_threads`` for a library built with -fopenmp, flagged ``openmp``),
  ``read_only`` (arrays declared INTENT(IN): shared between calls, not copied),
  ``min_repeats``, ``warmups``, ``budget_s`` (per variant and thread count) and ``wall_s`` (the
  whole task: later runs get less when early ones overrun); each run is timed adaptively (see
  :func:`time_adaptively`) and the output is rewritten after every variant, so a task cut off
  by its time limit keeps what it finished; the variant ``numba_cuda`` is synchronised after
  each call;
- ``stream``: ``elements``, ``threads``, ``budget_s``, ``fma_lanes``, ``fma_iterations``: STREAM
  copy/triad and a peak-FLOP (FMA) loop on 1 and ``threads`` threads.

Input values: reals uniform in [0.5, 1.5], integer arrays in [1, 9], logicals random; see
:mod:`kernels.engine.verify` for why.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time

import numpy as np

HARNESS_FILE = "fsp_harness.py"
REAL_RANGE = (0.5, 1.5)
INT_ARRAY_RANGE = (1, 10)  # numpy's upper bound is exclusive: values 1..9


# --------------------------------------------------------------------------------------------
# Timing statistics
#
# Honest figures on a noisy, shared machine:
# * the median of the timed calls, which a few preempted calls do not move;
# * a distribution-free confidence interval for it from order statistics (the true median lies
#   between the l-th and (n-l+1)-th smallest of n samples with probability
#   1 - 2 * P(Binomial(n, 1/2) < l)), with its actual coverage, below 95 % under 6 samples;
# * the spread as the interquartile range over the median, which one outlier does not inflate
#   the way (max - min) / median does.
# Repeats continue until the interval is narrow, the budget is spent or max_repeats is reached;
# a spread that stays above SPREAD_WARNING_PCT is reported as a warning.

SPREAD_WARNING_PCT = 10.0
CI_LEVEL = 0.95
DEFAULT_MIN_REPEATS = 5
DEFAULT_MAX_REPEATS = 200
DEFAULT_REL_HALFWIDTH = 0.02  # stop when the median is known to within +-2 %
FLOOR_REPEATS = 3  # taken whatever the budget: fewer samples have no median worth the name


def _binomial_cdf_below(n, k):
    """P(Binomial(n, 1/2) < k)."""
    return sum(math.comb(n, i) for i in range(k)) / 2**n


def median_interval(times, level=CI_LEVEL):
    """(low, high, coverage) of the order-statistic confidence interval for the median.

    The narrowest symmetric pair of order statistics whose coverage reaches ``level``; with too
    few samples for that, ``[min, max]`` and a coverage that says how much less it is worth.
    """
    xs = sorted(times)
    n = len(xs)
    if n == 0:
        raise ValueError("no samples")
    best = 1
    for rank in range(1, n // 2 + 1):
        if 1.0 - 2.0 * _binomial_cdf_below(n, rank) >= level:
            best = rank
        else:
            break
    coverage = 1.0 - 2.0 * _binomial_cdf_below(n, best)
    return xs[best - 1], xs[n - best], round(coverage, 4)


def _quantile(xs, q):
    """Linear interpolation between order statistics of sorted ``xs`` (numpy's default)."""
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarise(times, settled=False, stop_reason="max_repeats"):
    """Median, interval, extremes, spread and warnings of a list of call times (seconds)."""
    xs = sorted(times)
    if not xs:
        raise ValueError("no samples")
    med = _quantile(xs, 0.5)
    lo, hi, coverage = median_interval(xs)
    iqr = _quantile(xs, 0.75) - _quantile(xs, 0.25)
    spread = round(100.0 * iqr / med, 2) if med > 0 else 0.0
    warnings = []
    if spread > SPREAD_WARNING_PCT:
        warnings.append(
            f"noisy timing: the interquartile spread is {spread:.0f}% of the median "
            f"(above {SPREAD_WARNING_PCT:.0f}%) after {len(xs)} calls"
        )
    return {
        "times": list(times),
        "median_s": med,
        "ci_low_s": lo,
        "ci_high_s": hi,
        "ci_level": coverage,
        "min_s": xs[0],
        "max_s": xs[-1],
        "spread_pct": spread,
        "repeats": len(xs),
        "settled": settled,
        "stop_reason": stop_reason,
        "warnings": warnings,
    }


def interval_settled(times, rel_halfwidth):
    """True when the median's 95 % interval lies within +-rel_halfwidth of it."""
    if len(times) < 6:  # below 6 samples no pair of order statistics reaches 95 %
        return False
    lo, hi, _ = median_interval(times)
    med = _quantile(sorted(times), 0.5)
    return med > 0 and (hi - lo) / 2 <= rel_halfwidth * med


def time_adaptively(
    sample,
    budget_s,
    min_repeats=DEFAULT_MIN_REPEATS,
    max_repeats=DEFAULT_MAX_REPEATS,
    rel_halfwidth=DEFAULT_REL_HALFWIDTH,
    clock=time.monotonic,
):
    """Call ``sample`` (it returns one timed call's duration) until the median settles.

    Sampling stops when the interval is narrow enough (after ``min_repeats``), when ``budget_s``
    of ``clock`` time is spent (set-up between calls included) or at ``max_repeats``; the budget
    can cut ``min_repeats`` short, never below ``FLOOR_REPEATS``. Returns :func:`summarise`'s dict.
    """
    start = clock()
    times = []
    reason = "max_repeats"
    settled = False
    while len(times) < max(max_repeats, min_repeats):
        times.append(float(sample()))
        if len(times) >= min_repeats and interval_settled(times, rel_halfwidth):
            settled, reason = True, "settled"
            break
        if len(times) >= FLOOR_REPEATS and clock() - start >= budget_s:
            reason = "budget"
            break
    return summarise(times, settled=settled, stop_reason=reason)


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
            # Drawn even when filled: the other inputs stay the same whatever the fill.
            values[a["name"]] = _random_array(rng, a["base"], dtype, tuple(a["shape"]))
            if a.get("fill") is not None:
                values[a["name"]][...] = a["fill"]
        elif a.get("value") is not None:
            values[a["name"]] = dtype.type(a["value"])
        else:
            values[a["name"]] = dtype.type(_random_array(rng, a["base"], dtype, ()).item())
    return values


def with_selection(args, selection):
    """``args`` with the scalars (``value``) and flag arrays (``fill``) of ``selection`` set."""
    out = []
    for a in args:
        if a["name"] in selection:
            a = dict(a, **{"fill" if a["array"] else "value": selection[a["name"]]})
        out.append(a)
    return out


def selection_path(path, index):
    """Where call ``index`` of a run with several selections writes the file ``path``."""
    stem, dot, suffix = path.rpartition(".")
    return f"{stem}.s{index}.{suffix}" if dot else f"{path}.s{index}"


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
    compile_s, compile_cpu_s, cache_hits, elapsed = 0.0, 0.0, 0, 0.0
    selections = spec.get("selections")
    fn = None
    for index, selection in enumerate(selections or [{}]):
        args = with_selection(spec["args"], selection)
        values = _fresh(args, make_inputs(args, spec["seed"]))
        if spec["mode"] == "fortran":
            fn = fn or _load_fortran(spec["library"], spec["symbol"])
            thunk, keep = _fortran_call(fn, args, values, spec["result"])
            t0 = time.perf_counter()
            thunk()
            elapsed += time.perf_counter() - t0
            out = _fortran_outputs(args, keep, spec["result"])
        else:
            if fn is None:
                fn = _load_python(spec["module"], spec["entry"])
                # One compilation: every selection has the same argument types.
                compile_s, compile_cpu_s, cache_hits = _compile_for(
                    fn, values, spec.get("numba_cache", False)
                )
            t0 = time.perf_counter()
            returned = fn(*values)
            elapsed += time.perf_counter() - t0
            out = _python_outputs(args, values, returned, spec["result"])
        if selections is None:
            np.savez(spec["output"], **out)
            continue
        np.savez(selection_path(spec["output"], index), **out)
        counters = spec.get("coverage_file")
        if counters and os.path.exists(counters):
            os.replace(counters, selection_path(counters, index))
    print(
        json.dumps(
            {
                "elapsed_s": elapsed,
                "compile_s": compile_s,
                "compile_cpu_s": compile_cpu_s,
                "cache_hits": cache_hits,
                **spec.get("timing", {}),
            }
        )
    )


def _write_json(path, data):
    # Replaced whole: a reader never sees half a file, and a task cut off keeps its last write.
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def task_time(spec):
    args = spec["args"]
    base = make_inputs(args, spec["seed"])
    warmups = int(spec.get("warmups", 1))
    min_repeats = int(spec["min_repeats"])
    result = spec.get("result")
    end = time.monotonic() + float(spec["wall_s"])
    read_only = set(spec["read_only"])
    runs_left = sum(len(info["threads"]) for info in spec["variants"].values())
    out = {"variants": {}}

    def time_run(prepare, sync=None):
        nonlocal runs_left
        for _ in range(warmups):  # numba's JIT, first touch of the pages, thread start-up
            prepare(_fresh(args, base))()
            if sync is not None:
                sync()

        def sample():
            # Only the call itself is timed: copying inputs and building ctypes arguments are not.
            thunk = prepare(_fresh_writable(args, base, read_only))
            t0 = time.perf_counter()
            thunk()
            if sync is not None:
                sync()
            return time.perf_counter() - t0

        budget = min(float(spec["budget_s"]), (end - time.monotonic()) / max(1, runs_left))
        runs_left -= 1
        stats = time_adaptively(sample, max(0.0, budget), min_repeats=min_repeats)
        del stats["times"]
        return stats

    for variant, info in spec["variants"].items():
        try:
            runs = []
            if "library" in info:
                fn = _load_fortran(info["library"], info["symbol"])
                lib = ctypes_cdll(info["library"]) if info.get("openmp") else None
                for threads in info["threads"]:
                    if lib is not None:
                        # libgomp is a dependency of the -fopenmp build: dlsym finds it there.
                        lib.omp_set_num_threads(threads)
                    stats = time_run(
                        lambda values, fn=fn: _fortran_call(fn, args, values, result)[0]
                    )
                    runs.append({"threads": threads, **stats})
            else:
                entry = _load_python(info["module"], info["entry"], "fsp_" + variant)
                sync = None
                if variant == "numba_cuda":
                    from numba import cuda

                    sync = cuda.synchronize
                for threads in info["threads"]:
                    if variant != "numba_cuda":
                        import numba

                        numba.set_num_threads(threads)
                    stats = time_run(lambda values, entry=entry: lambda: entry(*values), sync)
                    runs.append({"threads": threads, **stats})
            out["variants"][variant] = {"runs": runs}
        except Exception as exc:  # one failing variant must not hide the others
            out["variants"][variant] = {"error": (f"{type(exc).__name__}: {exc}")[:500]}
        _write_json(spec["output"], out)


def _fresh_writable(args, base, read_only):
    """Inputs for one timed call: copies of the arrays it may write, ``read_only`` ones shared.

    A timing loop would copy hundreds of MiB per call otherwise; arrays declared INTENT(IN)
    cannot be written by a conforming kernel, so sharing them keeps every call's inputs equal.
    """
    values = []
    for a in args:
        v = base[a["name"]]
        if a["array"]:
            values.append(v if a["name"] in read_only else np.asfortranarray(v.copy()))
        else:
            values.append(np.dtype(a["dtype"]).type(v))
    return values


def ctypes_cdll(library):
    import ctypes

    return ctypes.CDLL(os.path.abspath(library))


def task_stream(spec):
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

    # Peak FLOP rate: every lane is an independent chain x = x*y + z (one FMA, two flops) on
    # data that stays in registers and L1; enough lanes hide the FMA latency once vectorised.
    @numba.njit(fastmath=True, cache=False)
    def fma_block(x, y, z, iters):
        for _ in range(iters):
            for k in range(x.size):
                x[k] = x[k] * y + z

    @numba.njit(parallel=True, fastmath=True, cache=False)
    def fma_threads(xs, y, z, iters):
        for t in numba.prange(xs.shape[0]):
            fma_block(xs[t], y, z, iters)

    n = int(spec["elements"])
    threads = int(spec["threads"])
    a = np.full(n, 1.0)
    b = np.full(n, 2.0)
    c = np.zeros(n)
    out = {"elements": n, "array_mib": round(8 * n / (1 << 20), 1)}
    # STREAM's byte counts: copy moves 2 arrays, triad 3 (write-allocate traffic not counted).
    cases = {
        "copy_serial": (copy_serial, (a, c), 16, 1),
        "triad_serial": (triad_serial, (a, b, c, 3.0), 24, 1),
        "copy_parallel": (copy_parallel, (a, c), 16, threads),
        "triad_parallel": (triad_parallel, (a, b, c, 3.0), 24, threads),
    }
    per_case = float(spec["budget_s"]) / (len(cases) + 2)
    for name, (fn, fargs, per_elem, nthreads) in cases.items():
        numba.set_num_threads(nthreads)
        fn(*fargs)  # warm-up: JIT compile and first touch

        def sample(fn=fn, fargs=fargs):
            t0 = time.perf_counter()
            fn(*fargs)
            return time.perf_counter() - t0

        stats = time_adaptively(sample, per_case)
        # Like STREAM, the reference is the best rate; the median shows how noisy the machine is.
        out[name + "_gbs"] = round(per_elem * n / stats["min_s"] / 1e9, 3)
        out[name + "_median_gbs"] = round(per_elem * n / stats["median_s"] / 1e9, 3)
        out[name + "_spread_pct"] = stats["spread_pct"]
    lanes, iters = int(spec["fma_lanes"]), int(spec["fma_iterations"])
    y, z = 0.999999, 1e-6  # x stays bounded: no overflow, no denormals
    for label, nthreads in (("serial", 1), ("parallel", threads)):
        numba.set_num_threads(nthreads)
        xs = np.full((nthreads, lanes), 1.0)
        fma_threads(xs, y, z, 1)  # warm-up: compiles both functions

        def sample_fma(xs=xs):
            t0 = time.perf_counter()
            fma_threads(xs, y, z, iters)
            return time.perf_counter() - t0

        stats = time_adaptively(sample_fma, per_case)
        flops = 2.0 * lanes * iters * nthreads
        out["fma_" + label + "_gflops"] = round(flops / stats["min_s"] / 1e9, 2)
        out["fma_" + label + "_median_gflops"] = round(flops / stats["median_s"] / 1e9, 2)
        out["fma_" + label + "_spread_pct"] = stats["spread_pct"]
    out["threads"] = threads
    _write_json(spec["output"], out)


TASKS = {"run": task_run, "time": task_time, "stream": task_stream}
WAIT_FLAG = "--wait"  # fsp_harness.py --wait SPEC: warm up, then run SPEC once told "go"
GO = b"go\n"


def warm_up_numba():
    """Pay numba's one-time costs before the port exists (see :func:`main`).

    The import (about 0.4 s), the CPU target's typing and lowering registries (about 0.25 s:
    otherwise the first compile or cache load fills them) and ``typeof``'s first array.
    """
    import numba
    from numba.core.registry import cpu_target

    cpu_target.typing_context.refresh()
    cpu_target.target_context.refresh()
    numba.typeof(np.zeros((1, 1), order="F"))


def main(argv):
    """``fsp_harness.py SPEC``, or ``fsp_harness.py --wait SPEC``.

    With ``--wait`` the harness is started before SPEC exists (while the server still parses
    and generates the port): it imports numba and warms it up, then reads stdin. Only ``go``
    followed by a newline makes it read SPEC and run it; anything else (EOF: the server did not
    need it) ends it without running anything. ``ready_at``, the ``time.monotonic()`` at which
    the warm-up ended, then comes with the task's last line.
    """
    timing = {}
    if len(argv) > 2 and argv[1] == WAIT_FLAG:
        warm_up_numba()
        timing["ready_at"] = time.monotonic()
        if sys.stdin.buffer.readline() != GO:
            _exit_now(0)
    with open(argv[-1]) as fh:
        spec = json.load(fh)
    spec["timing"] = timing
    TASKS[spec["task"]](spec)
    _exit_now(0)


def _exit_now(status):
    """Flush and leave without the interpreter's finalisation.

    Tearing down an interpreter that imported numba takes 0.3-0.6 s (every module and LLVM
    object freed one by one), all of it after the outputs were written and closed.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main(sys.argv)

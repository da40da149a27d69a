"""Modeled DRAM traffic and launch cost per time step of a numba.cuda port.

The CUDA backend (``backends/cuda.py``) describes what its host driver launches in a
:class:`LaunchPlan`: for one iteration of the time loop (the outermost host loop that launches
kernels; the whole call when there is none), every launch with the arrays it reads and writes
and the loops its threads run. :func:`evaluate` turns that plan into figures at given sizes. The
module imports only the IR, so it sits below the backends, the pipeline and ``profile``.

**Elements an array reference touches**: the product of the trip counts of the loops (grid loops
and loops inside the thread) whose variables appear in its subscripts, at most the array's size.
``u(i-1, j)`` in an ``(i, j)`` nest touches ``n * m`` elements; the 1-D profile ``a_x(i)`` in the
same nest touches ``n``; a whole-array reference touches the whole array.

**Modeled bytes per step** (``bytes_per_step``): for every launch, each distinct array it reads
counts once and each distinct array it writes counts once more (an in-place update moves its
array twice), each with the largest element count among the launch's references to it, times
the item size. Caches are ignored beyond that: neighbour reads (``u(i-1,j)``, ``u(i+1,j)``) are
one read of ``u``. In a fused launch the nests' counts for one array add up, at most the array's
size (the Dirichlet edges of one array are disjoint; two interior nests cover the array once).

**Minimum bytes per step** (``min_bytes_per_step``): what a single ideal pass over the step
would move. Every array the step touches is moved once per direction it needs: read once if the
step reads values it did not produce itself (live-in), written once if the step writes new values
into it. A whole-array copy ``a = b`` inside the time loop writes no new values (renaming the two
buffers carries them), so it adds no write. Element counts are the largest count of one loop
nest's references to the array (so fusing nests does not change the minimum). Heat 2-D: ``u`` is
read and ``unew`` written: ``2 * 8 * n * m`` bytes.

**Launches per step**: kernel launches in one step, a reduction's finishing kernel included,
launches inside inner host loops multiplied by their trip counts.

**Host launch cost per step**: ``launches * LAUNCH_DISPATCH_S + array arguments *
LAUNCH_PER_ARRAY_ARG_S + scalar arguments * LAUNCH_PER_SCALAR_ARG_S``, plus
``TYPE_DISPATCH_PER_ARG_S`` per argument when the kernels are not compiled for explicit
signatures (each launch then types its arguments to pick an overload). The constants are
numba-cuda figures for launching a kernel whose signature is fixed: 6.6 us with no argument and
about 3.7 us more per array argument (NVIDIA/numba-cuda PR #288, numba-cuda main, 2025); a scalar
costs one ctypes conversion instead of an array's seven fields, taken as 1 us. On a machine with
a GPU, ``benchmarks/gpu_bandwidth.py`` measures the real cost and passes it as
``launch_cost_per_step_s`` (the report then says ``"measured"``).

**Predicted fraction of copy bandwidth** (``predicted_copy_bandwidth_fraction``)::

    t_step   = max(bytes / BW, host_cost) + launches * DEVICE_LAUNCH_GAP_S   (no host waits)
    t_step   = bytes / BW + host_cost + launches * DEVICE_LAUNCH_GAP_S        (host waits)
    fraction = (min_bytes / t_step) / BW = min_bytes / (BW * t_step)

``BW`` is the device-to-device copy bandwidth (read + write bytes per second, default
:data:`DEFAULT_COPY_BANDWIDTH_BPS`). Launches are asynchronous, so the host cost of queuing them
hides behind the GPU work of the previous ones unless a launch makes the host wait for a result
(a reduction, a sequential kernel returning scalars, an IF on device data): then the two add up.
Consecutive kernels still leave the device idle ``DEVICE_LAUNCH_GAP_S`` between them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kernels.engine import ir

LAUNCH_DISPATCH_S = 6.6e-6
LAUNCH_PER_ARRAY_ARG_S = 3.7e-6
LAUNCH_PER_SCALAR_ARG_S = 1.0e-6
TYPE_DISPATCH_PER_ARG_S = 0.5e-6
DEVICE_LAUNCH_GAP_S = 2.0e-6
# H100 SXM: 3.35 TB/s peak HBM3; a device-to-device copy reaches about 90 % of it.
DEFAULT_COPY_BANDWIDTH_BPS = 3.0e12


@dataclass(frozen=True)
class Bound:
    """A DO loop's bounds (IR expressions) and its variable."""

    var: str
    start: ir.Expr
    stop: ir.Expr
    step: ir.Expr | None = None

    def trip(self, env: Mapping[str, int | float]) -> int | None:
        """Fortran trip count at ``env``, or None when a bound is not known there."""
        try:
            lo = ir.eval_int(self.start, env)
            hi = ir.eval_int(self.stop, env)
            st = ir.eval_int(self.step, env) if self.step is not None else 1
        except (ir.NotConstant, ValueError, ZeroDivisionError, TypeError, KeyError):
            return None
        if st == 0:
            return None
        return max(0, (hi - lo + st) // st)

    def key(self) -> str:
        return repr((self.start, self.stop, self.step))


# The loops one array reference depends on; None is the whole array.
RefLoops = tuple[Bound, ...] | None
# Per array, one list of references per loop nest of the launch (a fused launch has several).
RefGroups = dict[str, list[list[RefLoops]]]


@dataclass
class Launch:
    """One kernel launch of the driver."""

    kernel: str
    kind: str  # nest, fused, serial, condition
    reads: RefGroups = field(default_factory=dict)
    writes: RefGroups = field(default_factory=dict)
    array_args: int = 0
    scalar_args: int = 0
    pure_copy: bool = False  # the kernel only does a(idx) = b(idx)
    waits: bool = False  # the host waits for a result after it
    extra_launches: int = 0  # a reduction's finishing kernel
    repeat: tuple[Bound | None, ...] = ()  # inner host loops around it (None: unknown count)


@dataclass
class ArrayInfo:
    itemsize: int
    dims: list[ir.Dim]


@dataclass
class LaunchPlan:
    """What the driver launches in one time step; see the module docstring."""

    arrays: dict[str, ArrayInfo]
    per_step: list[Launch]
    time_loop: Bound | None = None  # None: one step is the whole call (or a DO WHILE iteration)
    time_loop_line: int = 0
    swaps: list[tuple[str, str]] = field(default_factory=list)  # copies replaced by swaps
    eager_signatures: bool = True


@dataclass
class GpuModel:
    bytes_per_step: int | None
    min_bytes_per_step: int | None
    bytes_ratio: float | None
    launches_per_step: int
    predicted_copy_bandwidth_fraction: float | None
    host_launch_cost_per_step_s: float
    launch_cost_source: str  # "model" (constants above) or "measured"
    copy_bandwidth_Bps: float
    time_loop_line: int = 0
    time_per_step_s: float | None = None  # t_step of the predicted fraction's formula
    steps: int | None = None  # iterations of the time loop at the sizes (None: unknown)
    reason: str = ""  # why byte figures are missing

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "bytes_per_step": self.bytes_per_step,
            "min_bytes_per_step": self.min_bytes_per_step,
            "bytes_ratio": self.bytes_ratio,
            "launches_per_step": self.launches_per_step,
            "predicted_copy_bandwidth_fraction": self.predicted_copy_bandwidth_fraction,
            "host_launch_cost_per_step_s": self.host_launch_cost_per_step_s,
            "launch_cost_source": self.launch_cost_source,
            "copy_bandwidth_Bps": self.copy_bandwidth_Bps,
            "time_loop_line": self.time_loop_line,
            "time_per_step_s": self.time_per_step_s,
            "steps": self.steps,
        }
        if self.reason:
            out["reason"] = self.reason
        return out


def _significant(x: float) -> float:
    """Four significant digits: what the model is good for, and readable JSON."""
    return float(f"{x:.4g}")


class ModelError(ValueError):
    """A size the model needs is not known at the given sizes."""


def array_elements(plan: LaunchPlan, name: str, env: Mapping[str, int | float]) -> int:
    info = plan.arrays[name]
    total = 1
    for d in info.dims:
        if d.upper is None:
            raise ModelError(f"{name} has an assumed shape")
        try:
            lo = ir.eval_int(d.lower, env) if d.lower is not None else 1
            hi = ir.eval_int(d.upper, env)
        except (ir.NotConstant, ValueError, ZeroDivisionError, TypeError, KeyError) as exc:
            raise ModelError(f"the size of {name} is not known ({exc})") from exc
        total *= max(0, hi - lo + 1)
    return total


def _elements(
    groups: list[list[RefLoops]],
    size: int,
    env: Mapping[str, int | float],
    trips: dict[str, int | None],
) -> tuple[int, int]:
    """(elements a launch moves: the nests' counts added, at most ``size``; the largest count of
    one nest)."""
    counts = [_group_elements(g, size, env, trips) for g in groups]
    return min(size, sum(counts)), max(counts, default=0)


def _group_elements(
    refs: list[RefLoops], size: int, env: Mapping[str, int | float], trips: dict[str, int | None]
) -> int:
    best = 0
    for loops in refs:
        if loops is None:
            return size
        n = 1
        for b in loops:
            key = b.key()
            if key not in trips:
                trips[key] = b.trip(env)
            t = trips[key]
            if t is None:
                return size  # an unknown trip count: at most the whole array
            n *= t
        best = max(best, n)
    return min(best, size)


def _repeat(launch: Launch, env: Mapping[str, int | float]) -> int:
    count = 1
    for b in launch.repeat:
        t = b.trip(env) if b is not None else None
        count *= t if t is not None else 1
    return count


def host_launch_cost(plan: LaunchPlan, env: Mapping[str, int | float]) -> float:
    """Seconds of host time queuing one step's launches (the documented constants)."""
    total = 0.0
    for launch in plan.per_step:
        args = launch.array_args + launch.scalar_args
        cost = (
            LAUNCH_DISPATCH_S
            + launch.array_args * LAUNCH_PER_ARRAY_ARG_S
            + launch.scalar_args * LAUNCH_PER_SCALAR_ARG_S
        )
        if not plan.eager_signatures:
            cost += args * TYPE_DISPATCH_PER_ARG_S
        # A reduction's finishing kernel takes the partials, the count, the box and the inits.
        cost += launch.extra_launches * (LAUNCH_DISPATCH_S + 3 * LAUNCH_PER_ARRAY_ARG_S)
        total += cost * _repeat(launch, env)
    return total


def evaluate(
    plan: LaunchPlan,
    env: Mapping[str, int | float],
    *,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    copy_bandwidth: float = DEFAULT_COPY_BANDWIDTH_BPS,
    launch_cost_per_step_s: float | None = None,
) -> GpuModel:
    """The model's figures at ``env`` (sizes and constants); see the module docstring.

    ``shapes`` gives array shapes known from elsewhere (the verifier's plan: assumed-shape
    arguments); ``launch_cost_per_step_s`` replaces the modeled host cost by a measured one.
    """
    launches = sum((1 + x.extra_launches) * _repeat(x, env) for x in plan.per_step)
    if launch_cost_per_step_s is None:
        cost, source = round(host_launch_cost(plan, env), 9), "model"
    else:
        cost, source = float(launch_cost_per_step_s), "measured"
    model = GpuModel(
        None,
        None,
        None,
        launches,
        None,
        cost,
        source,
        copy_bandwidth,
        plan.time_loop_line,
    )
    model.steps = plan.time_loop.trip(env) if plan.time_loop is not None else None
    if plan.time_loop is None and not plan.time_loop_line:
        model.steps = 1
    try:
        sizes = {}
        for name in plan.arrays:
            if shapes is not None and name in shapes:
                sizes[name] = math.prod(shapes[name])
        itemsize = {name: info.itemsize for name, info in plan.arrays.items()}

        def size_of(name: str) -> int:
            if name not in sizes:
                sizes[name] = array_elements(plan, name, env)
            return sizes[name]

        trips: dict[str, int | None] = {}
        modeled = 0
        most: dict[str, int] = {}  # largest element count per array over the step
        live_in: set[str] = set()
        written_new: set[str] = set()
        produced: set[str] = set()
        in_loop = plan.time_loop is not None or plan.time_loop_line > 0
        for launch in plan.per_step:
            reps = _repeat(launch, env)
            for name in launch.reads.keys() | launch.writes.keys():
                size = size_of(name)
                n_read, one_read = _elements(launch.reads.get(name, []), size, env, trips)
                n_write, one_write = _elements(launch.writes.get(name, []), size, env, trips)
                modeled += reps * (n_read + n_write) * itemsize[name]
                most[name] = max(most.get(name, 0), one_read, one_write)
                if name in launch.reads and name not in produced:
                    live_in.add(name)
                if name in launch.writes:
                    produced.add(name)
                    if not (launch.pure_copy and in_loop):
                        written_new.add(name)
        minimum = sum(
            ((name in live_in) + (name in written_new)) * most[name] * itemsize[name]
            for name in most
        )
    except ModelError as exc:
        model.reason = str(exc)
        return model
    model.bytes_per_step = modeled
    model.min_bytes_per_step = minimum
    model.bytes_ratio = round(modeled / minimum, 4) if minimum else None
    if modeled and minimum:
        t_bytes = modeled / copy_bandwidth
        waits = any(x.waits for x in plan.per_step)
        t_step = (t_bytes + cost if waits else max(t_bytes, cost)) + launches * DEVICE_LAUNCH_GAP_S
        model.time_per_step_s = _significant(t_step)
        model.predicted_copy_bandwidth_fraction = _significant(minimum / (copy_bandwidth * t_step))
    return model

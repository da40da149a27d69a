"""The profiler: static cost model (hand-counted), ranking, parallelism reasons, --measure, plot.

Flop and byte counts below are counted by hand from the Fortran, following the model documented
in kernels/engine/profile.py: + - * / count one flop each as written; an array subscripted by
every loop of the nest costs one element per iteration point when read and one more when
written, however many stencil neighbours are read; an array subscripted by fewer loops costs
its footprint (ideal reuse).
"""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import pytest

from fortranspire_site.cli import main as cli_main
from kernels.engine import ir
from kernels.engine.pipeline import find_kernels
from kernels.engine.plot import render_plot_png, roofs
from kernels.engine.profile import (
    Poly,
    ProfileResult,
    available_threads,
    machine_info,
    openmp_directive_lines,
    profile_kernel,
    profile_source,
    rank_kernels,
    thread_counts,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fortran"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def by_name(result: ProfileResult) -> dict:
    return {k.name: k for k in result.kernels}


# --------------------------------------------------------------------------------------------
# Hand-built IR: the cost model on its own, independent of the frontend


def _c(v: float | int) -> ir.Const:
    return ir.Const(v, ir.REAL8 if isinstance(v, float) else ir.INTEGER)


def _b(op: str, a: ir.Expr, b: ir.Expr) -> ir.BinOp:
    return ir.BinOp(op, a, b)


def _kernel(name: str, args: list[ir.Arg], body: list[ir.Stmt]) -> ir.Kernel:
    return ir.Kernel(name, args, body, {}, "", name, line=1)


def test_triangular_nest_trip_count_is_summed_exactly():
    # do j = 2, n-1 ; do i = 1, j : sum_{j=2}^{n-1} j
    n = ir.Var("n")
    body = ir.Assign(
        ir.ArrayRef("a", [ir.Var("i"), ir.Var("j")]),
        _b("*", ir.ArrayRef("a", [ir.Var("i"), ir.Var("j")]), _c(2.0)),
    )
    inner = ir.Loop("i", _c(1), ir.Var("j"), None, [body], line=3)
    outer = ir.Loop("j", _c(2), _b("-", n, _c(1)), None, [inner], line=2)
    dims = [ir.Dim(_c(1), n), ir.Dim(_c(1), n)]
    k = _kernel(
        "tri", [ir.Arg("n", ir.INTEGER, "in"), ir.Arg("a", ir.REAL8, "inout", dims)], [outer]
    )
    prof = profile_kernel(k, sizes={"n": 10})
    assert prof.trip_count == sum(range(2, 10))
    assert prof.flops == sum(range(2, 10))
    assert prof.bytes == 16 * sum(range(2, 10))


def test_intrinsics_and_powers_use_documented_weights():
    # y(i) = sqrt(x(i)) + exp(x(i)) * x(i)**2  -> sqrt 1 + exp 10 + ** 1 + * 1 + + 1 = 14
    x = ir.ArrayRef("x", [ir.Var("i")])
    value = _b(
        "+",
        ir.Call("sqrt", [x]),
        _b("*", ir.Call("exp", [x]), _b("**", x, _c(2))),
    )
    loop = ir.Loop(
        "i", _c(1), ir.Var("n"), None, [ir.Assign(ir.ArrayRef("y", [ir.Var("i")]), value)]
    )
    dims = [ir.Dim(_c(1), ir.Var("n"))]
    k = _kernel(
        "weights",
        [
            ir.Arg("n", ir.INTEGER, "in"),
            ir.Arg("x", ir.REAL8, "in", dims),
            ir.Arg("y", ir.REAL8, "out", dims),
        ],
        [loop],
    )
    prof = profile_kernel(k, sizes={"n": 100})
    assert prof.flops_per_iter == 14
    assert prof.bytes == 100 * 16


def test_vector_reused_across_rows_costs_its_length_not_one_element_per_point():
    # do i = 1, n ; do j = 1, n : y(i) = y(i) + a(i,j) * x(j)   (matrix-vector product)
    i, j, n = ir.Var("i"), ir.Var("j"), ir.Var("n")
    y = ir.ArrayRef("y", [i])
    body = ir.Assign(y, _b("+", y, _b("*", ir.ArrayRef("a", [i, j]), ir.ArrayRef("x", [j]))))
    nest = ir.Loop("i", _c(1), n, None, [ir.Loop("j", _c(1), n, None, [body])])
    vec = [ir.Dim(_c(1), n)]
    k = _kernel(
        "matvec",
        [
            ir.Arg("n", ir.INTEGER, "in"),
            ir.Arg("a", ir.REAL8, "in", vec + vec),
            ir.Arg("x", ir.REAL8, "in", vec),
            ir.Arg("y", ir.REAL8, "inout", vec),
        ],
        [nest],
    )
    prof = profile_kernel(k, sizes={"n": 100})
    assert prof.flops == 2 * 100 * 100
    # a: n*n elements; x: n (kept in cache across i); y: n read + n written
    assert prof.bytes == 8 * (100 * 100 + 3 * 100)
    assert prof.bytes_symbolic == "8*n**2 + 24*n"


def test_symbolic_polynomials_print_innermost_factor_first():
    nx, ny = Poly.symbol("nx"), Poly.symbol("ny")
    assert str(nx - Poly.const(2)) == "nx-2"
    assert str((nx - Poly.const(1)) * Poly.const(2) + Poly.const(1)) == "2*nx-1"
    assert str(nx * ny - nx) == "nx*ny-nx"


# --------------------------------------------------------------------------------------------
# Real fixtures through the frontend


def test_heat2d_flops_and_bytes_match_hand_count():
    result = profile_source(fixture("heat2d_jacobi.f90"), sizes={"n": 100, "m": 50, "nstep": 10})
    (heat,) = result.kernels
    points = 100 * 50 * 10
    # update nest: u + 0.2*alpha*(4 neighbours summed: 3 adds, one subtract, 4*u: one multiply)
    #   = 1 + 1 + 1 + 3 + 1 + 1 = 8 flops; reads u, writes unew: 16 bytes per point.
    # copy-back nest: 0 flops; reads unew, writes u: 16 bytes per point.
    assert heat.trip_count == 2 * points
    assert heat.trip_count_symbolic == "2*n*m*nstep"
    assert heat.flops == 8 * points
    assert heat.bytes == 32 * points
    assert heat.flops_per_iter == pytest.approx(4.0)
    assert heat.intensity == pytest.approx(0.25)
    update, copy = heat.nests
    assert (update["flops_per_iter"], update["bytes_per_iter"]) == (8, 16)
    assert (copy["flops_per_iter"], copy["bytes_per_iter"]) == (0, 16)
    # the spatial nests are parallel, the time loop carries u from step to step
    assert heat.parallel is True
    assert "loop j" in heat.reason


def test_stencil3d_flops_and_bytes_match_hand_count():
    result = profile_source(fixture("stencil3d_7pt.f90"), sizes={"n": 20, "m": 30, "l": 40})
    (st,) = result.kernels
    points = 18 * 28 * 38
    # h2inv * (6 neighbours: 5 adds, one subtract of 6*a: one multiply) = 1 + 5 + 1 + 1 = 8
    # reads a, writes b: 16 bytes per point
    assert st.trip_count_symbolic == "(n-2)*(m-2)*(l-2)"
    assert st.trip_count == points
    assert st.flops == 8 * points
    assert st.bytes == 16 * points
    assert st.intensity == pytest.approx(0.5)
    assert st.parallel is True


def test_kernels_of_a_file_are_ranked_by_estimated_cost():
    result = profile_source(fixture("profile_hotspots.f90"), sizes={"n": 64, "nsweep": 4})
    assert [k.name for k in result.kernels] == ["smooth3d", "blur2d", "axpy", "prefix_sum"]
    assert [k.rank for k in result.kernels] == [1, 2, 3, 4]
    assert sum(k.share for k in result.kernels) == pytest.approx(1.0, abs=1e-3)
    assert result.kernels[0].share > 0.8
    k = by_name(result)
    # hand counts at n=64: smooth3d 62**3 points x (9 flops, 16 bytes)
    assert k["smooth3d"].flops == 9 * 62**3
    assert k["smooth3d"].bytes == 16 * 62**3
    # blur2d: 4 sweeps x 64**2 points x (12 flops + 16 bytes, then a 16-byte copy)
    assert k["blur2d"].flops == 4 * 64**2 * 12
    assert k["blur2d"].bytes == 4 * 64**2 * 32
    assert k["axpy"].bytes == 64 * 24 and k["prefix_sum"].bytes == 63 * 24


def test_carried_dependence_is_reported_not_parallel_with_its_reason():
    result = profile_source(fixture("profile_hotspots.f90"), sizes={"n": 64, "nsweep": 4})
    prefix = by_name(result)["prefix_sum"]
    assert prefix.parallel is False
    assert "loop i" in prefix.reason
    assert "a" in prefix.reason.replace("loop i", "")
    gs = profile_source(fixture("gauss_seidel.f90")).kernels[0]
    assert gs.parallel is False
    assert "loop i" in gs.reason and "loop j" in gs.reason
    assert "not analysed" not in gs.reason


def test_cpml_nests_are_broken_down_and_coefficient_profiles_cost_their_footprint():
    result = profile_source(fixture("cpml_elastic_2d.f90"), sizes={"nx": 40, "ny": 30, "nstep": 2})
    (cpml,) = result.kernels
    updates = [n for n in cpml.nests if len(n["loops"]) == 3]
    edges = [n for n in cpml.nests if len(n["loops"]) == 2]
    assert len(updates) == 4 and all(n["parallel"] for n in updates)
    # the Dirichlet edges vx(1,:) = 0 ... are lowered to 8 one-dimensional loops
    assert sorted(n["trip_count"] for n in edges) == [2 * 30] * 4 + [2 * 40] * 4
    first = updates[0]
    points = 39 * 29 * 2
    assert first["trip_count"] == points
    # 11 statements: 2+2+2+2+2+3+3+2+2+5+5 = 30 flops per point
    assert first["flops"] == 30 * points
    # 2-D arrays touched once per point: 8 read (lambda, mu, vx, vy, the 2 memory variables,
    # sigmaxx, sigmayy) + 4 written; the 1-D profiles a/b/K_x_half(i) cost nx-1 elements and
    # a/b/K_y(j) ny-1 elements per time step (ideal reuse across the other loop).
    assert first["bytes"] == 8 * 2 * (12 * 39 * 29 + 3 * 39 + 3 * 29)
    assert sum(n["share"] for n in cpml.nests) == pytest.approx(1.0, abs=1e-3)


def test_forbidden_statement_exits_with_code_2(capsys):
    code = cli_main(["profile", str(FIXTURES / "forbidden_call_system.f90")])
    assert code == 2
    err = capsys.readouterr().err.lower()
    assert "system" in err and ":" in err


def test_syntax_error_exits_with_code_2_and_points_at_the_line(capsys):
    code = cli_main(["profile", str(FIXTURES / "syntax_error.f90"), "--json"])
    assert code == 2
    out = capsys.readouterr()
    payload = json.loads(out.out)
    assert payload["kernels"] == []
    assert payload["error"]["error"] == "FortranSyntaxError"
    line = payload["error"]["diagnostics"][0]["line"]
    assert line > 0
    assert f"syntax_error.f90:{line}:" in out.err


def test_json_output_follows_the_translate_report_style(capsys):
    code = cli_main(
        [
            "profile",
            str(FIXTURES / "heat2d_jacobi.f90"),
            "--size",
            "n=64",
            "--size",
            "m=64",
            "--json",
        ]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["file"] == "heat2d_jacobi.f90"
    (k,) = data["kernels"]
    for key in (
        "name",
        "line",
        "trip_count_symbolic",
        "trip_count",
        "flops_per_iter",
        "flops",
        "bytes",
        "intensity",
        "parallel",
        "reason",
        "share",
        "rank",
    ):
        assert key in k
    assert k["sizes"]["n"] == 64 and k["sizes"]["m"] == 64
    assert "machine" in data and "stream" in data
    assert "measured" not in k


def test_bad_size_argument_is_a_usage_error(capsys):
    assert cli_main(["profile", str(FIXTURES / "heat2d_jacobi.f90"), "--size", "n"]) == 2


def test_progress_callback_reports_each_stage():
    seen: list[tuple[str, int, int]] = []
    profile_source(
        fixture("profile_hotspots.f90"), progress=lambda s, d, t, m: seen.append((s, d, t))
    )
    stages = {s for s, _, _ in seen}
    assert {"parse", "analyse"} <= stages
    assert ("analyse", 4, 4) in seen


# --------------------------------------------------------------------------------------------
# Plot


def test_plot_is_a_valid_png(tmp_path):
    import matplotlib.image as mpimg

    out = tmp_path / "profile.png"
    code = cli_main(
        ["profile", str(FIXTURES / "profile_hotspots.f90"), "--plot", str(out), "--json"]
    )
    assert code == 0
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC)
    image = mpimg.imread(io.BytesIO(data), format="png")
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400


def test_render_plot_png_accepts_the_json_dict():
    result = ProfileResult("x.f90", [], machine_info())
    assert render_plot_png(result.to_dict()).startswith(PNG_MAGIC)


# --------------------------------------------------------------------------------------------
# Measurement (sandboxed subprocess; gfortran and numba)


@pytest.mark.skipif(shutil.which("gfortran") is None, reason="gfortran is not installed")
def test_measure_on_a_small_size_finishes_in_seconds():
    start = time.monotonic()
    result = profile_source(
        fixture("heat2d_jacobi.f90"),
        sizes={"n": 64, "m": 64, "nstep": 2},
        measure=True,
        repeats=3,
        stream_elements=1 << 20,
        timeout_s=120,
    )
    elapsed = time.monotonic() - start
    assert elapsed < 60, f"measurement took {elapsed:.1f} s"
    (heat,) = result.kernels
    m = heat.measured
    assert m is not None
    for variant in ("gfortran", "numba_serial", "numba_prange"):
        assert m[variant].status == "ok", m[variant].message
        assert m[variant].repeats >= 3  # at least the minimum; more until the median settles
        assert 0 < m[variant].min_s <= m[variant].median_s <= m[variant].max_s
        assert m[variant].ci_low_s <= m[variant].median_s <= m[variant].ci_high_s
        assert m[variant].bandwidth_gbs > 0 and m[variant].stream_pct > 0
    assert m["numba_cuda"].status in ("ok", "skipped")
    assert result.stream["triad_serial_gbs"] > 0 and result.stream["triad_parallel_gbs"] > 0
    assert result.machine["bandwidth_source"].startswith("STREAM")
    # no OpenMP in the original: serial gfortran only, and every ratio says so
    assert m["gfortran_omp"].status == "skipped"
    assert "no OpenMP directives" in m["gfortran_omp"].message
    assert "no OpenMP in the original" in m["numba_prange"].compared_with
    assert heat.measure_sizes["source"] == "given (--size)"
    # 2 arrays of (64+2)**2 real(8)
    assert heat.measure_sizes["working_set_mib"] == round(2 * 8 * 66 * 66 / 2**20, 2)
    # the chart now carries measured points and timing bars
    assert render_plot_png(result).startswith(PNG_MAGIC)


@pytest.mark.skipif(shutil.which("gfortran") is None, reason="gfortran is not installed")
def test_openmp_original_is_also_timed_with_fopenmp_at_the_same_thread_counts(
    tmp_path, capsys, monkeypatch
):
    chart = tmp_path / "roofline.png"
    # A 1 MiB byte cap: sizes chosen for a 1 MiB working set, quick, and still chosen, not given.
    monkeypatch.setenv("FORTRANSPIRE_MAX_RUN_BYTES", str(1 << 20))
    code = cli_main(
        [
            "profile",
            str(FIXTURES / "omp_jacobi2d.f90"),
            "--measure",
            "--json",
            "--plot",
            str(chart),
            "--repeats",
            "3",
            "--timeout",
            "90",
        ]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 0, data
    (k,) = data["kernels"]
    counts = thread_counts(available_threads())
    # the directive is found, and both parallel variants ran at every thread count
    assert k["openmp"] == {"directives": True, "lines": [13]}
    m = k["measured"]
    for variant in ("gfortran_omp", "numba_prange"):
        assert m[variant]["status"] == "ok", m[variant]["message"]
        assert [r["threads"] for r in m[variant]["scaling"]] == counts
        assert m[variant]["scaling"][0]["speedup"] == 1.0
        assert m[variant]["threads"] == counts[-1]
    top = counts[-1]
    assert m["numba_prange"]["compared_with"] == f"gfortran -O3 -fopenmp, {top} threads"
    omp_median = m["gfortran_omp"]["median_s"]
    assert m["numba_prange"]["speedup_vs_gfortran"] == pytest.approx(
        omp_median / m["numba_prange"]["median_s"], rel=1e-2
    )
    assert m["numba_serial"]["compared_with"] == "gfortran -O3, serial"
    # sizes were chosen for measuring, within the cap (inputs held twice)
    sizes = k["measure_sizes"]
    assert sizes["source"] == "chosen for measuring"
    n, mm = sizes["sizes"]["n"], sizes["sizes"]["m"]
    assert n > 13 and mm > 11
    assert sizes["working_set_mib"] == round(2 * 8 * (n + 2) * (mm + 2) / 2**20, 2) <= 1.0
    # the machine was probed and its figures are the chart's ceilings, labelled "measured"
    stream, machine = data["stream"], data["machine"]
    assert stream["fma_serial_gflops"] > 0 and stream["fma_parallel_gflops"] > 0
    assert machine["peak_gflops_serial"] == stream["fma_serial_gflops"]
    assert machine["peak_source"].endswith("(measured)")
    assert machine["caches"] and machine["cpu"] and machine["cores"] >= 1
    labels = {label: (peak, bw) for label, peak, bw, _ in roofs(data)}
    one = next(v for lbl, v in labels.items() if lbl.startswith("1 thread"))
    assert one == (stream["fma_serial_gflops"], stream["triad_serial_gbs"])
    assert all("measured" in lbl for lbl in labels)
    assert chart.read_bytes().startswith(PNG_MAGIC)


def test_rank_kernels_orders_by_estimated_time():
    a = profile_kernel(
        _kernel(
            "small",
            [
                ir.Arg("n", ir.INTEGER, "in"),
                ir.Arg("y", ir.REAL8, "out", [ir.Dim(_c(1), ir.Var("n"))]),
            ],
            [
                ir.Loop(
                    "i",
                    _c(1),
                    ir.Var("n"),
                    None,
                    [ir.Assign(ir.ArrayRef("y", [ir.Var("i")]), _c(0.0))],
                )
            ],
        ),
        sizes={"n": 10},
    )
    b = profile_kernel(
        _kernel(
            "big",
            [
                ir.Arg("n", ir.INTEGER, "in"),
                ir.Arg("y", ir.REAL8, "out", [ir.Dim(_c(1), ir.Var("n"))]),
            ],
            [
                ir.Loop(
                    "i",
                    _c(1),
                    ir.Var("n"),
                    None,
                    [ir.Assign(ir.ArrayRef("y", [ir.Var("i")]), _c(0.0))],
                )
            ],
        ),
        sizes={"n": 1000},
    )
    ordered = rank_kernels([a, b])
    assert [k.name for k in ordered] == ["big", "small"]
    assert ordered[0].share == pytest.approx(1000 / 1010, abs=1e-3)


def test_measurement_refuses_sizes_whose_inputs_would_not_fit_before_allocating_them():
    result = profile_source(
        fixture("heat2d_jacobi.f90"),
        sizes={"n": 40000, "m": 40000, "nstep": 1},
        measure=True,
        stream_elements=1 << 16,
        timeout_s=60,
    )
    (heat,) = result.kernels
    assert heat.trip_count == 2 * 40000 * 40000  # the static model still answers
    gf = heat.measured["gfortran"]
    assert gf.status == "failed" and "FORTRANSPIRE_MAX_RUN_BYTES" in gf.message


def test_terminal_progress_bar_renders_each_stage():
    from rich.console import Console

    from fortranspire_site.cli_profile import _terminal_progress

    buf = io.StringIO()
    bar = _terminal_progress(
        enabled=True, console=Console(file=buf, force_terminal=True, width=100)
    )
    with bar as progress:
        profile_source(fixture("profile_hotspots.f90"), progress=progress)
    text = buf.getvalue()
    assert "analyse" in text and "4/4" in text


def test_a_loop_that_runs_zero_times_empties_its_nest():
    # n = m = 1: both (n-2) and (m-2) are negative; their product must not count as work
    result = profile_source(fixture("stencil3d_7pt.f90"), sizes={"n": 1, "m": 1, "l": 50})
    (st,) = result.kernels
    assert (st.trip_count, st.flops, st.bytes) == (0, 0, 0)


def test_defaulted_sizes_are_named_in_the_notes():
    (heat,) = profile_source(fixture("heat2d_jacobi.f90"), sizes={"n": 64}).kernels
    assert heat.sizes["n"] == 64
    assert any("m=" in note and "nstep=" in note and "n=64" not in note for note in heat.notes)


def test_openmp_directives_are_attributed_to_their_own_subroutine_only():
    source = """subroutine plain(n, y)
  integer, intent(in) :: n
  real(8), intent(inout) :: y(n)
  integer :: i
  do i = 1, n
    y(i) = 2d0 * y(i)
  end do
end subroutine plain

subroutine threaded(n, y)
  integer, intent(in) :: n
  real(8), intent(inout) :: y(n)
  integer :: i
  !$OMP PARALLEL DO
  do i = 1, n
    y(i) = 3d0 * y(i)
  end do
  !$omp end parallel do
end subroutine threaded
"""
    kernels = {k.name: k for k in find_kernels(source, filename="two.f90")}
    assert openmp_directive_lines(kernels["plain"]) == []
    assert openmp_directive_lines(kernels["threaded"]) == [14]  # the END directive is not one


def _run(threads: int, median: float) -> dict:
    return {
        "threads": threads,
        "median_s": median,
        "min_s": median * 0.9,
        "max_s": median * 1.2,
        "ci_low_s": median * 0.95,
        "ci_high_s": median * 1.05,
        "ci_level": 0.96,
        "spread_pct": 4.0,
        "repeats": 9,
        "stop_reason": "settled",
        "settled": True,
        "warnings": [],
    }


def test_scaling_rows_and_fair_ratios_are_computed_from_the_medians():
    from kernels.engine.profile import _attach_rates, _timing_from_runs

    prof = profile_kernel(
        _kernel(
            "k",
            [
                ir.Arg("n", ir.INTEGER, "in"),
                ir.Arg("y", ir.REAL8, "out", [ir.Dim(_c(1), ir.Var("n"))]),
            ],
            [
                ir.Loop(
                    "i",
                    _c(1),
                    ir.Var("n"),
                    None,
                    [ir.Assign(ir.ArrayRef("y", [ir.Var("i")]), _c(0.0))],
                )
            ],
        ),
        sizes={"n": 1_000_000},
    )
    assert prof.bytes == 8_000_000
    prof.measured = {
        "gfortran": _timing_from_runs("gfortran", [_run(1, 0.008)]),
        "gfortran_omp": _timing_from_runs("gfortran_omp", [_run(1, 0.008), _run(2, 0.005)]),
        "numba_serial": _timing_from_runs("numba_serial", [_run(1, 0.010)]),
        "numba_prange": _timing_from_runs("numba_prange", [_run(1, 0.010), _run(2, 0.004)]),
    }
    _attach_rates(prof, {"triad_serial_gbs": 2.0, "triad_parallel_gbs": 4.0, "threads": 2})
    m = prof.measured
    prange = m["numba_prange"]
    # headline at 2 threads; speed-up 10/4 = 2.5, efficiency 1.25 (super-linear: cache effects)
    assert prange.threads == 2 and prange.median_s == 0.004
    assert [(r["threads"], r["speedup"], r["efficiency"]) for r in prange.scaling] == [
        (1, 1.0, 1.0),
        (2, 2.5, 1.25),
    ]
    # compared with gfortran -fopenmp at the same thread counts: 5/4 at 2, 8/10 at 1
    assert prange.speedup_vs_gfortran == 1.25
    assert prange.compared_with == "gfortran -O3 -fopenmp, 2 threads"
    assert [r["vs_gfortran_omp"] for r in prange.scaling] == [0.8, 1.25]
    # bandwidth against the triad at the same thread count: 8 MB / 4 ms = 2 GB/s = 50 % of 4
    assert prange.bandwidth_gbs == 2.0 and prange.stream_pct == 50.0
    assert m["numba_serial"].stream_pct == 40.0  # 0.8 GB/s of the 2 GB/s serial triad
    assert m["numba_serial"].compared_with == "gfortran -O3, serial"
    assert m["numba_serial"].speedup_vs_gfortran == 0.8
    assert m["gfortran_omp"].compared_with == "gfortran -O3, serial build"
    assert m["gfortran"].speedup_vs_gfortran is None


def test_measured_table_prints_sizes_intervals_scaling_and_warnings(capsys, monkeypatch):
    from fortranspire_site.cli_profile import _print_table

    monkeypatch.setenv("COLUMNS", "250")  # wide enough that no cell folds

    row = {**_run(2, 0.004), "warnings": ["noisy timing: spread 30%"]}
    timing = {
        "status": "ok",
        **row,
        "gflops": 1.0,
        "bandwidth_gbs": 2.0,
        "stream_pct": 50.0,
        "stream_ref": "triad, 2 threads",
        "speedup_vs_gfortran": 1.25,
        "compared_with": "gfortran -O3 -fopenmp, 2 threads",
        "scaling": [
            {"threads": 1, "median_s": 0.01, "speedup": 1.0, "efficiency": 1.0},
            {"threads": 2, "median_s": 0.004, "speedup": 2.5, "efficiency": 1.25},
        ],
        "message": "",
    }
    kernel = profile_kernel(_kernel("k", [ir.Arg("n", ir.INTEGER, "in")], []), sizes={"n": 4})
    data = ProfileResult("k.f90", [kernel], machine_info(), measured=True).to_dict()
    data["kernels"][0].update(
        measured={
            "numba_prange": timing,
            "numba_cuda": {"status": "skipped", "message": "no GPU present"},
        },
        measure_sizes={"source": "chosen for measuring", "sizes": {"n": 512}, "notes": []},
        openmp={"directives": True, "lines": [13]},
    )
    data["kernels"][0]["measure_sizes"]["working_set_mib"] = 64.0
    _print_table(data)
    out = capsys.readouterr().out
    assert "n=512" in out and "64.0 MiB" in out and "yes (line 13)" in out
    assert "4 ms" in out and "3.8 ms..4.2 ms" in out  # the median and its interval
    assert "2.5x" in out and "1.25x" in out  # scaling speed-up and the fair ratio
    assert "gfortran -O3 -fopenmp, 2 threads" in out
    assert "numba_prange: noisy timing: spread 30%" in out
    assert "numba_cuda: skipped: no GPU present" in out

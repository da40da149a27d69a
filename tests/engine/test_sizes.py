"""Sizes that exercise the code: roles of integer inputs, static checks, candidates, overrides."""

from __future__ import annotations

from pathlib import Path

from kernels.engine import sizes
from kernels.engine.frontend import parse_file

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fortran"


def kernel_of(name: str):
    (k,) = parse_file((FIXTURES / name).read_text(), filename=name).kernels
    return k


def test_structured_grid_bounds_get_lower_below_upper():
    k = kernel_of("halo_bounds.f90")
    assert sizes.roles(k) == {
        "x_min": "lower",
        "x_max": "upper",
        "y_min": "lower",
        "y_max": "upper",
    }
    values = sizes.infer(k)
    assert values["x_min"] < values["x_max"] and values["y_min"] < values["y_max"]
    best = sizes.candidates(k)[0]
    assert best.empty_loops == [] and best.out_of_bounds == []


def test_a_radius_is_small_and_positive_and_below_n():
    k = kernel_of("radius_stencil.f90")
    assert sizes.roles(k) == {"n": "upper", "r": "offset"}
    values = sizes.infer(k)
    assert 0 < values["r"] and 2 * values["r"] + 1 < values["n"]


def test_the_old_argument_order_table_is_seen_to_empty_the_loops():
    k = kernel_of("halo_bounds.f90")
    old = sizes.check(k, {"x_min": 13, "x_max": 11, "y_min": 9, "y_max": 10})
    assert old.empty_loops == [14]  # do j = x_min, x_max + 1 with 13 > 12


def test_subscripts_outside_the_declared_bounds_are_found_statically():
    k = kernel_of("oob_read.f90")
    (problem,) = sizes.check(k, {"n": 9}).out_of_bounds
    assert problem == "a dimension 1: index range 2..10 outside 1..9"


def test_given_sizes_win_and_the_simulator_gets_smaller_ones():
    k = kernel_of("halo_bounds.f90")
    assert sizes.infer(k, {"X_MAX": 40})["x_max"] == 40
    cpu = sizes.infer(k)
    sim = sizes.infer(k, simulator=True)
    assert sim["x_max"] < cpu["x_max"] and sim["x_min"] < sim["x_max"]


def test_relational_constraints_pick_a_candidate_that_stays_in_bounds():
    src = """subroutine copy_head(n, m, a, b)
  integer, intent(in) :: n, m
  real(8), intent(in) :: a(n)
  real(8), intent(inout) :: b(n)
  integer :: i
  do i = 1, m
    b(i) = a(i)
  end do
end subroutine
"""
    (k,) = parse_file(src).kernels
    best = sizes.candidates(k)[0]
    assert best.out_of_bounds == [] and best.empty_loops == []
    assert best.values["m"] <= best.values["n"]


def test_assumed_shape_extents_cover_the_constant_subscripts_used():
    src = """subroutine pick(fields, a)
  integer, parameter :: field_energy = 14
  integer, intent(in) :: fields(:)
  real(8), intent(inout) :: a(:)
  integer :: i
  if (fields(field_energy) == 1) then
    do i = 1, 3
      a(i) = 0
    end do
  end if
end subroutine
"""
    (k,) = parse_file(src).kernels
    assert sizes.assumed_extents(k, {})["dim1"] == 14
    assert sizes.infer(k)["dim1"] == 14
    assert sizes.infer(k, {"dim1": 20})["dim1"] == 20


# --------------------------------------------------------------------------------------------
# PARAMETER-fixed sizes


def program_kernels(name: str) -> dict:
    return {k.name: k for k in parse_file((FIXTURES / name).read_text(), filename=name).kernels}


def test_parameters_used_as_extents_bounds_and_subscripts_are_sizes_only():
    k = program_kernels("param_wave_2d.f90")["param_wave_2d_loop4"]  # the time loop
    assert sizes.integer_constants(k) == {
        "nx": 401, "ny": 401, "nstep": 2000, "isrc": 200, "jsrc": 200, "jrec": 203
    }  # fmt: skip
    assert sizes.parameter_float_uses(k, sizes.integer_constants(k)) == {}
    assert sizes.roles(k, ["nx", "ny", "nstep"]) == {"nx": "upper", "ny": "upper", "nstep": "upper"}


def test_a_parameter_in_floating_point_arithmetic_is_not_a_size():
    k = program_kernels("param_wave_2d.f90")["param_wave_2d_loop2"]  # the damping profile
    # damp(i) = 1 - 0.05 * dble(npml - i + 1) * dx / width: npml is a number there.
    assert sizes.parameter_float_uses(k, ["npml", "nx"]) == {
        "npml": "it is used in floating-point arithmetic (line 24)"
    }


CALLEE = """module m
  implicit none
  integer, parameter :: n = 50, w = 8
contains
  subroutine outer(a, s)
    real(8), intent(inout) :: a(n)
    real(8), intent(out) :: s
    call fill(n, a)
    s = weight(w)
  end subroutine outer
  subroutine fill(len, a)
    integer, intent(in) :: len
    real(8), intent(inout) :: a(len)
    integer :: i
    do i = 1, len
      a(i) = a(i) + 1.0d0
    end do
  end subroutine fill
  pure real(8) function weight(k)
    integer, intent(in) :: k
    weight = 1.0d0 / k
  end function weight
end module m
"""


def test_a_parameter_passed_to_a_callee_is_judged_by_the_dummys_uses_there():
    k = {x.name: x for x in parse_file(CALLEE).kernels}["outer"]
    # n sizes the callee's loop and array: a size; w becomes 1.0 / k: a number.
    assert sizes.parameter_float_uses(k, ["n", "w"]) == {
        "w": "it is used in floating-point arithmetic (line 21)"
    }


def test_work_multiplies_trip_counts_and_parameters_can_be_overridden():
    (k,) = parse_file((FIXTURES / "param_grid_3d.f90").read_text()).kernels
    # 1 (sweep DO) + 4 x (1 + 40 x (1 + 48 x (1 + 64 x 5 statements)))
    assert sizes.work(k, {}) == 2_465_445 > sizes.work_budget("simulator")
    assert sizes.work(k, {"nx": 7, "ny": 6, "nz": 5, "nsweep": 3}) < sizes.work_budget("simulator")
    assert sizes.work_budget("cpu") > sizes.work(k, {})  # compiled, it runs as written


def test_parameter_plans_go_by_role_smallest_first_and_only_ever_shrink():
    k = program_kernels("param_wave_2d.f90")["param_wave_2d_loop4"]
    plans = sizes.parameter_plans(k, ["nx", "ny", "nstep"], simulator=True)
    assert plans[0] == {"nx": 7, "ny": 6, "nstep": 5}
    assert plans[1] == {"nx": 14, "ny": 12, "nstep": 10}
    assert all(v < 401 for plan in plans for v in plan.values())
    (grid,) = parse_file((FIXTURES / "param_grid_3d.f90").read_text()).kernels
    first = sizes.parameter_plans(grid, ["nx", "ny", "nz", "nsweep"])[0]
    assert first == {"nx": 13, "ny": 11, "nz": 9, "nsweep": 3}  # nsweep: a count


def test_loop_bounds_are_read_through_top_level_copies_of_the_inputs():
    # ``first = lo`` then ``do i = first, n``: lo starts a loop, so it gets a lower's value; a
    # copy set to an impossible range is seen to empty the loop.
    src = """subroutine tail(n, lo, a)
  integer, intent(in) :: n, lo
  real(8), intent(inout) :: a(n)
  integer :: i, first
  first = lo
  do i = first, n
    a(i) = 0.5d0 * a(i)
  end do
end subroutine tail
"""
    (k,) = parse_file(src, filename="tail.f90").kernels
    assert sizes.roles(k) == {"n": "upper", "lo": "lower"}
    assert sizes.check(k, {"n": 5, "lo": 9}).empty_loops == [6]
    assert sizes.check(k, {"n": 5, "lo": 1}).empty_loops == []


def test_integer_components_of_a_derived_type_are_sizes():
    (k,) = [
        x
        for x in parse_file(
            (FIXTURES / "derived_type_field.f90").read_text(), filename="t.f90"
        ).kernels
        if x.name == "diffuse"
    ]
    assert sizes.roles(k) == {"new_ni": "upper", "new_nj": "upper"}
    best = sizes.candidates(k)[0]
    assert best.empty_loops == [] and best.out_of_bounds == []


def _sweep(values: dict[str, int]) -> int:
    return values["direction"] + 2 * (values["sweep_number"] - 1)


def test_inputs_that_choose_branches_get_the_constants_they_are_compared_with():
    k = kernel_of("sweep_selectors.f90")
    found = sizes.selectors(k)
    # Sizes are not selectors; each selector ends with one value matching nothing (ELSE).
    assert set(found) == {"direction", "sweep_number", "which_flux", "limiter"}
    assert found["direction"][:2] == [1, 2] and found["which_flux"] == [1, 2]
    assert {0, 1, 2, 3} <= set(found["limiter"])  # CASE (0), CASE (1:2), CASE DEFAULT
    # sweep_number is compared with nothing itself: it is solved through the local `sweep`.
    assert {1, 2} <= set(found["sweep_number"])


def test_the_selections_together_reach_every_loop_with_natural_values_first():
    k = kernel_of("sweep_selectors.f90")
    best = sizes.candidates(k)[0]
    assert best.never_reached == [] and best.empty_loops == []
    assert 1 < len(best.selections) <= sizes.MAX_SELECTIONS
    assert {_sweep(s) for s in best.selections} == {1, 2, 3, 4}
    assert {s["direction"] for s in best.selections} == {1, 2}  # not 3 or 4
    assert all(s["which_flux"] == 1 for s in best.selections)
    limiters = {s["limiter"] for s in best.selections}
    assert limiters & {1, 2} and limiters - {0, 1, 2}  # CASE (1:2) and CASE DEFAULT
    # The run's own values are the first selection's.
    assert {n: best.values[n] for n in best.selections[0]} == best.selections[0]
    # One selection alone leaves loops unreached: the others are needed.
    assert best.unreached


def test_a_flag_array_is_filled_with_the_value_its_elements_are_compared_with():
    k = kernel_of("halo_exchange_fields.f90")
    assert sizes.selectors(k) == {"neighbours": [-1, 0], "fields": [1, 2]}
    best = sizes.candidates(k)[0]
    assert best.values["neighbours"] == -1 and best.values["fields"] == 1
    assert len(best.selections) == 1 and best.unreached == [] and best.never_reached == []


def test_a_selector_given_with_size_is_not_varied_and_its_other_branches_stay_unreached():
    k = kernel_of("sweep_selectors.f90")
    best = sizes.candidates(k, {"direction": 2})[0]
    assert best.values["direction"] == 2
    assert all("direction" not in s for s in best.selections)
    assert {_sweep({**s, "direction": 2}) for s in best.selections} == {2, 4}
    # The loops of direction == 1 (lines 55-62) can be reached by no selection.
    assert {55, 56, 61, 62} <= set(best.never_reached)


def test_an_integer_array_read_as_data_is_not_a_flag_array():
    source = (
        "subroutine gather(n, mode, idx, a, b)\n"
        "  integer, intent(in) :: n, mode, idx(n)\n"
        "  real(8), intent(in) :: a(n)\n"
        "  real(8), intent(out) :: b(n)\n"
        "  integer :: i\n"
        "  if (idx(1) == 1 .and. mode == 4) then\n"
        "    do i = 1, n\n"
        "      b(i) = a(idx(i))\n"
        "    end do\n"
        "  end if\n"
        "end subroutine gather\n"
    )
    (k,) = parse_file(source, filename="gather.f90").kernels
    assert sizes.selectors(k) == {"mode": [4, 5]}


def test_a_return_taken_for_a_selector_value_leaves_what_follows_unreached():
    source = (
        "subroutine early(n, mode, a)\n"
        "  integer, intent(in) :: n, mode\n"
        "  real(8), intent(inout) :: a(n)\n"
        "  integer :: i\n"
        "  if (mode == 0) return\n"
        "  do i = 1, n\n"
        "    a(i) = 2.0d0 * a(i)\n"
        "  end do\n"
        "end subroutine early\n"
    )
    (k,) = parse_file(source, filename="early.f90").kernels
    assert sizes.check(k, {"n": 5, "mode": 0}).unreached == [6]
    assert sizes.check(k, {"n": 5, "mode": 1}).unreached == []
    assert sizes.candidates(k)[0].selections == [{"mode": 1}]


def test_a_tile_sweep_reading_i_minus_1_starts_inside_the_array():
    # A wavefront sweep over one tile of grid(m, n): its callers start the tile at 2, and
    # starting at 1 would read grid(0, j), outside the original's bounds.
    source = (
        "subroutine sweep_tile(startm, endm, startn, endn, m, n, grid)\n"
        "  integer, intent(in) :: startm, endm, startn, endn, m, n\n"
        "  real(8), intent(inout) :: grid(m, n)\n"
        "  integer :: i, j\n"
        "  do j = startn, endn\n"
        "    do i = startm, endm\n"
        "      grid(i, j) = grid(i - 1, j) + grid(i, j - 1) - grid(i - 1, j - 1)\n"
        "    end do\n"
        "  end do\n"
        "end subroutine sweep_tile\n"
    )
    (k,) = parse_file(source, filename="sweep_tile.f90").kernels
    best = sizes.candidates(k)[0]
    assert best.out_of_bounds == [] and best.empty_loops == []
    assert best.values["startm"] == 2 and best.values["startn"] == 2

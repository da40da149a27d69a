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

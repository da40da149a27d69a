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

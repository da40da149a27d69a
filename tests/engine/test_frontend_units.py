"""Frontend, program units and declarations: arguments, kinds, implicit typing, modules, PROGRAM extraction."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from kernels.engine import ir
from tests.engine.frontend_ir import kernels_of, only

HEAT = """
subroutine heat(nx, ny, u, unew)
  implicit none
  integer, parameter :: dp = kind(1.d0)
  integer, intent(in) :: nx, ny
  real(kind=dp), intent(in) :: u(0:nx+1, 0:ny+1)
  real(dp), intent(inout) :: unew(0:nx+1, 0:ny+1)
  integer :: i, j
  do j = 1, ny
    do i = 1, nx
      unew(i, j) = 0.25_dp * (u(i-1, j) + u(i+1, j) + u(i, j-1) + u(i, j+1))
    end do
  end do
end subroutine heat
"""


def test_subroutine_arguments_keep_order_types_intents_and_lower_bounds():
    k = only(HEAT)
    assert [a.name for a in k.args] == ["nx", "ny", "u", "unew"]
    assert [a.intent for a in k.args] == ["in", "in", "in", "inout"]
    u = k.arg("u")
    assert u.type == ir.REAL8
    assert isinstance(u.dims[0].lower, ir.Const) and u.dims[0].lower.value == 0
    assert ir.eval_int(u.dims[0].upper, {"nx": 10}) == 11
    assert k.fortran_entry == "heat" and "subroutine heat" in k.fortran_source.lower()


def test_kind_spellings_resolve_to_real8():
    k = only(
        """
subroutine kinds(a, b, c, d, e, f)
  integer, parameter :: wp = selected_real_kind(15, 307)
  real(8), intent(in) :: a
  real*8, intent(in) :: b
  double precision, intent(in) :: c
  real(kind=wp), intent(in) :: d
  real, intent(in) :: e
  real(4), intent(out) :: f
  f = e
end subroutine
"""
    )
    assert [a.type for a in k.args] == [ir.REAL8] * 4 + [ir.REAL4, ir.REAL4]


def test_implicit_double_precision_rule_types_undeclared_names():
    k = only(
        """
      SUBROUTINE S(N, A, X)
      IMPLICIT DOUBLE PRECISION (A-H,O-Z)
      DIMENSION A(N)
      DO 10 I = 1, N
         A(I) = X*A(I)
   10 CONTINUE
      END
""",
        filename="s.f",
    )
    assert k.arg("a").type == ir.REAL8 and k.arg("x").type == ir.REAL8
    assert k.arg("n").type.base == "integer"


def test_default_implicit_typing_without_implicit_none():
    k = only("subroutine s(n, x, y)\n  y = x * n\nend subroutine\n")
    assert k.arg("n").type == ir.INTEGER and k.arg("x").type == ir.REAL4
    assert k.arg("y").intent == "out"


def test_module_constants_and_pure_functions_reach_the_kernel():
    ks = kernels_of(
        """
module m
  implicit none
  real(8), parameter :: pi = 3.14159265358979d0
  real(8), parameter :: two_pi = 2.0d0 * pi
contains
  pure real(8) function sq(x)
    real(8), intent(in) :: x
    sq = x * x
  end function sq
  subroutine s(n, a)
    integer, intent(in) :: n
    real(8), intent(inout) :: a(n)
    integer :: i
    do i = 1, n
      a(i) = two_pi * sq(a(i))
    end do
  end subroutine s
end module m
"""
    )
    k = ks["s"]
    assert k.fortran_module == "m"
    assert k.constants["two_pi"].value == pytest.approx(2 * 3.14159265358979)
    assert "sq" in k.functions and k.functions["sq"].pure


def test_program_loop_nests_become_kernels_with_inferred_intents():
    ks = kernels_of(
        """
program p
  implicit none
  integer, parameter :: n = 8
  real(8) :: u(0:n+1), unew(0:n+1), c
  integer :: i, step
  c = 0.5d0
  do i = 0, n + 1
    u(i) = dble(i)
  end do
  do step = 1, 3
    do i = 1, n
      unew(i) = u(i) + c * (u(i+1) - u(i-1))
    end do
    print *, 'step', step
    do i = 1, n
      u(i) = unew(i)
    end do
  end do
  print *, u(1)
end program p
"""
    )
    assert list(ks) == ["p_loop1", "p_loop2"]
    init, time_loop = ks["p_loop1"], ks["p_loop2"]
    assert [(a.name, a.intent) for a in init.args] == [("u", "out")]
    intents = {a.name: a.intent for a in time_loop.args}
    assert intents == {"u": "inout", "unew": "inout", "c": "in"}
    assert not any(isinstance(s, ir.Unsupported) for s in ir.walk(time_loop.body))
    assert "subroutine p_loop2(" in time_loop.fortran_source


@pytest.mark.skipif(shutil.which("gfortran") is None, reason="gfortran is not installed")
def test_extracted_program_kernel_source_compiles_with_gfortran(tmp_path):
    k = kernels_of(
        """
program p
  integer, parameter :: n = 8
  real(8) :: u(n)
  integer :: i
  do i = 1, n
    u(i) = 1.0d0
    write(*, *) i
  end do
end program p
"""
    )["p_loop1"]
    src = tmp_path / "k.f90"
    src.write_text(k.fortran_source)
    proc = subprocess.run(
        ["gfortran", "-fsyntax-only", str(src)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


def test_assumed_shape_dummy_takes_its_extent_from_a_loop_bound():
    k = only(
        """
module m
contains
  subroutine s(n, a)
    integer, intent(in) :: n
    real(8), intent(inout) :: a(:)
    integer :: i
    do i = 1, n
      a(i) = 0
    end do
  end subroutine
end module
"""
    )
    assert k.arg("a").dims[0].upper == ir.Var("n")


def test_assumed_size_dummies_get_an_open_last_dimension_and_a_loop_bound_extent():
    k = only(
        """
      SUBROUTINE SCAL(N, DA, DX, W)
      INTEGER N
      DOUBLE PRECISION DA, DX(*), W(N, *)
      INTEGER I
      DO I = 1, N
         DX(I) = DA * DX(I) + W(I, 1)
      END DO
      END
""",
        filename="scal.f",
    )
    assert k.arg("dx").dims[0].upper == ir.Var("n")
    w = k.arg("w")
    assert len(w.dims) == 2 and w.dims[0].upper == ir.Var("n") and w.dims[1].upper is None


def test_program_internal_procedures_travel_with_the_extracted_kernel():
    ks = kernels_of(
        """
program pc
  integer, parameter :: n = 5
  real(8) :: u(n), c
  integer :: i
  c = 0.5d0
  do i = 1, n
    u(i) = half(dble(i))
  end do
contains
  pure real(8) function half(x)
    real(8), intent(in) :: x
    half = c * x
  end function
end program
"""
    )
    k = ks["pc_loop1"]
    assert {a.name for a in k.args} == {"u", "c"}
    assert k.functions["half"].args == ["x", "c"]
    assert "contains" in k.fortran_source and "function half" in k.fortran_source
    assert not k.unsupported


# --------------------------------------------------------------------------------------------
# Derived types, module variables, initialised locals

FIXTURES = __import__("pathlib").Path(__file__).resolve().parents[1] / "fixtures" / "fortran"


def fixture_kernels(name: str) -> dict[str, ir.Kernel]:
    return kernels_of((FIXTURES / name).read_text(), filename=name)


def test_derived_type_dummies_are_passed_as_one_argument_per_component_used():
    k = fixture_kernels("derived_type_field.f90")["diffuse"]
    assert not k.unsupported
    assert [(a.name, a.intent) for a in k.args] == [
        ("new_ni", "in"),
        ("new_nj", "in"),
        ("new_hx", "in"),
        ("new_hy", "in"),
        ("new_val", "out"),
        ("old_val", "in"),
        ("kappa", "in"),
        ("dt", "in"),
    ]
    assert k.arg("new_val").source == ir.ComponentOf("new", ["val"], allocatable=True)
    assert k.fortran_args == ["new", "old", "kappa", "dt"]
    assert {n: (d.type_name, d.module) for n, d in k.derived_args.items()} == {
        "new": ("grid", "grid_types"),
        "old": ("grid", "grid_types"),
    }
    # The ALLOCATABLE component's bounds: the box of every access to grid%val, halo included,
    # read through the local copies ni = new%ni, nj = new%nj.
    env = {"new_ni": 5, "new_nj": 4}
    for name in ("new_val", "old_val"):
        bounds = [(ir.eval_int(d.lower, env), ir.eval_int(d.upper, env)) for d in k.arg(name).dims]
        assert bounds == [(0, 6), (0, 5)], name
    assert any("new%val -> new_val" in n for n in k.notes)


def test_an_intent_out_derived_type_dummy_returns_the_components_it_sets():
    k = fixture_kernels("derived_type_field.f90")["grid_init"]
    assert [(a.name, a.intent) for a in k.args if a.source is not None] == [
        ("g_ni", "out"),
        ("g_nj", "out"),
        ("g_hx", "out"),
        ("g_hy", "out"),
    ]


def test_an_array_of_derived_type_becomes_one_array_per_component():
    k = fixture_kernels("derived_type_particles.f90")["push_particles"]
    assert not k.unsupported
    assert [a.name for a in k.args] == [
        "n",
        "p_x",
        "p_y",
        "p_v",
        "p_w",
        "p_mass",
        "p_frozen",
        "p_f_fx",
        "p_f_fy",
        "dt",
    ]
    assert k.arg("p_frozen").type == ir.LOGICAL and k.arg("p_frozen").intent == "in"
    assert k.arg("p_x").intent == "inout" and k.arg("p_f_fx").source.path == ["f", "fx"]
    for a in k.args[1:-1]:
        assert [(d.lower.value, d.upper.name) for d in a.dims] == [(1, "n")]
    reflect = fixture_kernels("derived_type_particles.f90")["reflect"]
    assert [(a.name, a.intent, len(a.dims)) for a in reflect.args[2:]] == [
        ("box_lo", "in", 1),
        ("box_hi", "in", 1),
        ("box_nbounce", "inout", 0),
    ]


def test_pointer_components_type_bound_calls_and_class_variables_stay_unsupported():
    ks = fixture_kernels("unsupported_derived_type.f90")
    found = {
        name: [(u.line, u.column, u.construct) for u in k.unsupported] for name, k in ks.items()
    }
    assert found["total_area"] == [(27, 7, "POINTER component area of TYPE mesh")]
    assert found["rescale_all"] == [(37, 7, "CALL of a type-bound procedure")]
    assert found["rescale"][0] == (16, 5, "CLASS(mesh) (polymorphic) variable")


def test_a_derived_type_variable_used_whole_is_unsupported_with_its_line():
    k = only(
        """
module m
  type :: pair
    real(8) :: a, b
  end type pair
contains
  subroutine copy_pair(x, y)
    type(pair), intent(in) :: x
    type(pair), intent(out) :: y
    y = x
  end subroutine copy_pair
end module m
"""
    )
    assert [(u.line, u.construct.split(" (")[0]) for u in k.unsupported] == [
        (10, "derived-type variable y used whole")
    ]


def test_an_allocatable_array_of_derived_type_argument_is_unsupported():
    k = only(
        """
module m
  type :: pt
    real(8) :: x
  end type pt
contains
  subroutine shift(n, p)
    integer, intent(in) :: n
    type(pt), allocatable, intent(inout) :: p(:)
    integer :: i
    do i = 1, n
      p(i)%x = p(i)%x + 1.0d0
    end do
  end subroutine shift
end module m
"""
    )
    assert [(u.line, u.construct) for u in k.unsupported] == [
        (9, "ALLOCATABLE argument p of derived TYPE pt")
    ]


def test_module_variables_become_arguments_with_intent_from_use():
    ks = fixture_kernels("module_variables.f90")
    step = ks["diffuse_step"]
    assert not step.unsupported and step.fortran_args == []
    assert [(a.name, a.intent) for a in step.args] == [
        ("nx", "in"),
        ("ny", "in"),
        ("steps_done", "inout"),
        ("dt", "in"),
        ("coef", "in"),
        ("u", "in"),
        ("unew", "out"),
    ]
    assert step.arg("u").source == ir.ModuleVariable("diffusion_state", "u", allocatable=True)
    env = {"nx": 9, "ny": 7, "ncoef": 3}
    assert [ir.eval_int(d.upper, env) for d in step.arg("coef").dims] == [3]
    assert [(ir.eval_int(d.lower, env), ir.eval_int(d.upper, env)) for d in step.arg("u").dims] == [
        (1, 9),
        (1, 7),
    ]
    energy = ks["field_energy"]
    assert [a.name for a in energy.args] == ["energy", "nx", "ny", "dt", "field"]
    assert energy.arg("field").source == ir.ModuleVariable(
        "diffusion_state", "unew", allocatable=True
    )
    assert energy.fortran_args == ["energy"]


def test_a_used_module_variable_is_no_longer_taken_for_an_implicit_local():
    k = only(
        """
module settings
  real(8) :: scale
end module settings
subroutine apply(n, a)
  use settings
  integer, intent(in) :: n
  real(8), intent(inout) :: a(n)
  integer :: i
  do i = 1, n
    a(i) = scale * a(i)
  end do
end subroutine apply
"""
    )
    assert "scale" not in k.locals
    assert k.arg("scale").source == ir.ModuleVariable("settings", "scale")


def test_an_initialised_local_never_assigned_is_a_constant():
    k = fixture_kernels("initialised_locals.f90")["limited_mass_flux"]
    assert not k.unsupported
    assert k.constants["g_upwind_shift"].value == 2
    assert k.constants["one_by_six"].type == ir.REAL8
    assert abs(k.constants["one_by_six"].value - 1.0 / 6.0) < 1e-16
    assert k.constants["use_limiter"].value is True
    assert "one_by_six" not in k.locals


def test_an_initialised_local_the_procedure_assigns_is_unsupported_as_implicit_save():
    k = only(
        """
subroutine count_calls(n, a)
  integer, intent(in) :: n
  real(8), intent(inout) :: a(n)
  integer :: ncalls = 0
  integer :: i
  ncalls = ncalls + 1
  do i = 1, n
    a(i) = a(i) * ncalls
  end do
end subroutine count_calls
"""
    )
    ((line, construct),) = [(u.line, u.construct) for u in k.unsupported]
    assert line == 5 and "implicit SAVE" in construct and "ncalls" in construct


@pytest.mark.skipif(shutil.which("gfortran") is None, reason="gfortran is not installed")
def test_a_program_nest_on_module_variables_takes_them_as_arguments_it_does_not_declare(
    tmp_path,
):
    ks = kernels_of(
        """
module state
  implicit none
  integer :: n
  real(8) :: dt
  real(8), allocatable :: u(:)
end module state
program run
  use state
  implicit none
  integer :: i, it
  n = 20
  dt = 0.1d0
  allocate(u(n))
  do it = 1, 3
    do i = 2, n
      u(i) = u(i) + dt * u(i-1)
    end do
  end do
end program run
"""
    )
    (k,) = [x for x in ks.values() if any(isinstance(s, ir.Loop) and s.var == "it" for s in x.body)]
    assert {a.name: (a.intent, a.source) for a in k.args} == {
        "n": ("in", ir.ModuleVariable("state", "n")),
        "dt": ("in", ir.ModuleVariable("state", "dt")),
        "u": ("inout", ir.ModuleVariable("state", "u", allocatable=True)),
    }
    assert [ir.fortran_text(d.upper) for d in k.arg("u").dims] == ["n"]  # from the ALLOCATE
    assert k.fortran_args == []
    src = tmp_path / "k.f90"
    src.write_text(k.fortran_source)
    proc = subprocess.run(
        ["gfortran", "-fsyntax-only", str(src)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr

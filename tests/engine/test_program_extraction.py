"""Kernels inside real programs: extraction goes inward, nests under IF/SELECT CASE, internal I/O."""

from __future__ import annotations

from pathlib import Path

from kernels.engine import find_kernels, ir
from kernels.engine.security import find_forbidden

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fortran"


def kernels(name: str):
    return {k.name: k for k in find_kernels((FIXTURES / name).read_text(), filename=name)}


def test_a_time_loop_with_stop_and_io_gives_its_inner_nests_as_kernels():
    ks = kernels("seismogram_time_loop.f90")
    assert sorted(ks) == [f"seismogram_time_loop_loop{i}" for i in (1, 2, 3)]
    assert all(not k.unsupported for k in ks.values())
    inner = ks["seismogram_time_loop_loop2"]
    assert inner.line == 18
    assert any(
        "inside the loop at line 17" in n and "line 26: STOP statement" in n for n in inner.notes
    )
    # The PRINT of the time loop is not this nest's business.
    assert not any("PRINT" in n for n in inner.notes)


def test_nests_in_if_else_and_select_case_branches_are_each_extracted():
    ks = kernels("nest_in_if_else.f90")
    assert [k.line for k in ks.values()] == [10, 14, 18, 24, 28]
    assert all(not k.unsupported for k in ks.values())
    assert any(
        "branch of the IF/SELECT CASE at line 22" in n for n in ks["nest_in_if_else_loop5"].notes
    )


def test_an_internal_read_before_a_nest_does_not_block_it():
    (k,) = kernels("driver_internal_read.f90").values()
    assert not k.unsupported
    assert [a.name for a in k.args if not a.dims] == ["n"]  # what the READ computed: an argument


def test_internal_read_write_on_character_variables_is_not_file_io():
    src = (
        "program p\n  character(len=32) :: line, buf*8\n  integer :: n, u\n"
        "  read(line, *) n\n  write(buf, '(i4)') n\n  write(u, *) n\nend program\n"
    )
    (only,) = find_forbidden(src)
    assert only.line == 6 and "WRITE to unit u" in only.message


def test_a_name_declared_both_character_and_integer_stays_a_unit():
    src = (
        "subroutine a()\n  character(len=8) :: u\nend subroutine\n"
        "subroutine b(x)\n  integer :: u\n  real :: x\n  write(u, *) x\nend subroutine\n"
    )
    (only,) = find_forbidden(src)
    assert only.line == 7


def test_file_io_of_a_main_program_is_left_out_not_the_whole_program():
    src = (FIXTURES / "seismogram_time_loop.f90").read_text()
    src = src.replace(
        "  do it = 1, nstep\n",
        "  open(unit=20, file='seismo.dat', status='replace')\n  do it = 1, nstep\n",
    ).replace("      print *,", "      write(20, *) it, seismo(it)\n      print *,")
    ks = {k.name: k for k in find_kernels(src, filename="seismo.f90")}
    assert len(ks) == 3 and all(not k.unsupported for k in ks.values())
    (k,) = [k for k in ks.values() if k.line == 19]
    assert "left out of the main program" in " ".join(k.notes)
    assert "line 17: OPEN statement" in " ".join(k.notes)
    assert "WRITE to unit 20" in " ".join(k.notes)
    assert "open(" not in k.fortran_source.lower() and "write(20" not in k.fortran_source.lower()


def test_file_io_in_a_subroutine_still_excludes_that_subroutine():
    src = (
        "subroutine dump(n, a)\n  integer :: n\n  real(8) :: a(n)\n  write(10, *) a\n"
        "end subroutine\n"
        "subroutine scale(n, a)\n  integer :: n\n  real(8) :: a(n)\n  integer :: i\n"
        "  do i = 1, n\n    a(i) = 2 * a(i)\n  end do\nend subroutine\n"
    )
    assert [k.name for k in find_kernels(src, filename="two.f90")] == ["scale"]


def test_a_reduction_statement_in_a_time_loop_is_extracted_with_its_result():
    # ``energy(it) = 0.5d0 * sum(...)`` becomes an initialisation, a loop and an assignment;
    # the kernel holds all three (the original's text is the whole statement), not the loop
    # alone with an undeclared ``energy`` left in gfortran's source.
    ks = kernels("time_loop_reductions.f90")
    energy = next(k for k in ks.values() if k.line == 25)
    norm = next(k for k in ks.values() if k.line == 28)
    assert {a.name: a.intent for a in energy.args} == {
        "energy": "out",
        "u": "in",
        "v": "in",
        "it": "in",
    }
    assert {a.name: a.intent for a in norm.args} == {"u": "in", "v": "in", "unorm": "out"}
    for k, result in ((energy, "energy"), (norm, "unorm")):
        assigned = [s.target.name for s in k.body if isinstance(s, ir.Assign)]
        assert assigned[-1] == result and any(isinstance(s, ir.Loop) for s in k.body)
        assert not k.unsupported

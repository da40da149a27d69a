"""The forbidden-statement scan: what is refused, where it is reported, and what stays allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernels.engine.report import ForbiddenStatementError
from kernels.engine.security import check_forbidden, find_forbidden

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fortran"


def _kernel(body: str) -> str:
    return (
        "subroutine k(n, a)\n"
        "  integer, intent(in) :: n\n"
        "  real(8), intent(inout) :: a(n)\n"
        f"{body}\n"
        "end subroutine k\n"
    )


def _refused(source: str, *, fixed_form: bool = False) -> list[tuple[int, int, str]]:
    with pytest.raises(ForbiddenStatementError) as info:
        check_forbidden(source, fixed_form=fixed_form)
    return [(d.line, d.column, d.message) for d in info.value.diagnostics]


@pytest.mark.parametrize(
    "statement",
    [
        "  call execute_command_line('ls')",
        "  call system('ls')",
        "  i = system('ls')",
        "  open(unit=10, file='x.dat')",
        "  open (10, file='x.dat')",
        "  close(10)",
        "  inquire(file='x', exist=e)",
        "  rewind 10",
        "  rewind(10)",
        "  backspace 3",
        "  flush(10)",
        "  flush(unit=u)",
        "  call flush(6)",
        "  read(10, *) a(1)",
        "  read(unit=5, fmt=*) a(1)",
        "  read(unit=0, fmt=*) a(1)",
        "  read(6, *) a(1)",
        "  write(10, *) a(1)",
        "  write(unit=u, fmt='(a)') 'x'",
        "  write(5, *) a(1)",
        "  write(6+1, *) a(1)",
        "  write(error_unit, *) a(1)",
        "  call get_environment_variable('HOME', s)",
        "  call unlink('f')",
        "  include 'secrets.inc'",
        "  interface\n  subroutine p() bind(c, name='popen')\n  end subroutine\n  end interface",
    ],
)
def test_statement_touching_the_outside_world_is_refused(statement: str) -> None:
    found = _refused(_kernel(statement))
    assert found, statement
    assert all(msg.startswith("forbidden:") for _, _, msg in found)


def test_forbidden_statement_reports_its_line_and_column() -> None:
    source = _kernel("  a(1) = 2.0d0\n    call  Execute_Command_Line('id')")
    (line, column, message), *_ = _refused(source)
    assert (line, column) == (5, 11)
    assert "execute_command_line" in message


@pytest.mark.parametrize(
    "statement",
    [
        "  print *, 'open the file, call system(x)'",
        "  write(*, *) 'rewind'",
        "  write(*, '(a)') \"read(10,*) x\"",
        "  read(*, *) n2",
        "  read *, n2",
        # The preconnected output units: standard output (6), standard error (0).
        "  write(6, *) a(1)",
        "  write(0, *) 'negative density at ', n",
        "  write(unit=0, fmt='(a)') 'error'",
        "  flush(6)",
        "  flush(unit=0)",
        # The command line: argv only, no file, no process.
        "  call get_command_argument(1, s, length, status)",
        "  nargs = command_argument_count()",
        "  ! call system('ls') in a comment",
        "  a(1) = 1.0d0 ! open(10)",
        "  write_count = 3",
        "  a(1) = systemic(2.0d0)",
        "  openings(2) = 1",
        "  x = y ; stat2 = 1",
    ],
)
def test_harmless_statement_is_allowed(statement: str) -> None:
    assert find_forbidden(_kernel(statement)) == []


def test_variable_named_like_an_io_keyword_may_be_assigned() -> None:
    source = _kernel("  integer :: close(3)\n  close(2) = 1")
    assert find_forbidden(source) == []


def test_call_split_over_continuation_lines_is_refused() -> None:
    source = _kernel("  call &\n    & sys&\n    &tem('ls')")
    found = _refused(source)
    assert found[0][0] == 5  # reported where the statement's name starts


def test_one_line_if_does_not_hide_an_open() -> None:
    found = _refused(_kernel("  if (n > 3) open(11, file='f')"))
    assert found[0][:2] == (4, 14)


def test_statements_after_a_semicolon_are_checked() -> None:
    found = _refused(_kernel("  a(1) = 1.0d0; close(4)"))
    assert found[0][:2] == (4, 17)


def test_labelled_statement_is_checked() -> None:
    assert _refused(_kernel("10 write(7, *) n"))[0][:2] == (4, 4)


def test_every_offence_is_listed_in_source_order() -> None:
    source = _kernel("  open(1, file='a')\n  write(1, *) n\n  close(1)")
    assert [line for line, _, _ in _refused(source)] == [4, 5, 6]


def test_include_directive_is_refused() -> None:
    source = '#include "/etc/passwd"\n' + _kernel("  a(1) = 1.0d0")
    assert _refused(source)[0][:2] == (1, 1)


def test_fixed_form_ignores_comment_lines_and_blanks_in_names() -> None:
    source = (
        "C     CALL SYSTEM('ls') is only a comment here\n"
        "      SUBROUTINE K(N, A)\n"
        "      DIMENSION A(N)\n"
        "      CALL SYS TEM('ls')\n"
        "      END\n"
    )
    found = _refused(source, fixed_form=True)
    assert [f[:2] for f in found] == [(4, 7)]


def test_fixed_form_continuation_in_column_six_is_joined() -> None:
    source = (
        "      SUBROUTINE K(N, A)\n"
        "      DIMENSION A(N)\n"
        "      WRITE(\n"
        "     &10,*) A(1)\n"
        "      END\n"
    )
    assert _refused(source, fixed_form=True)[0][:2] == (3, 7)


def test_fixed_form_write_to_star_is_allowed() -> None:
    source = "      SUBROUTINE K(N)\n      WRITE(*,*) N\n      PRINT *, N\n      END\n"
    assert find_forbidden(source, fixed_form=True) == []


@pytest.mark.parametrize(
    "path", sorted(p for p in FIXTURES.glob("*") if p.is_file()), ids=lambda p: p.name
)
def test_fixture_is_refused_exactly_when_it_expects_forbidden(path: Path) -> None:
    text = path.read_text()
    fixed = path.suffix in (".f", ".F")
    expected = "! expect: forbidden" in text or "C     expect: forbidden" in text
    assert bool(find_forbidden(text, fixed_form=fixed)) == expected


def test_forbidden_call_assembled_by_a_macro_is_refused() -> None:
    import shutil

    if shutil.which("cpp") is None:
        pytest.skip("no C preprocessor installed")
    source = "#define RUN call sys/**/tem\n#define SHELL(x) execute_command_line(x)\n" + _kernel(
        "  RUN('ls')\n  call SHELL('id')"
    )
    found = _refused(source)
    assert [f[0] for f in found] == [6, 7]
    assert all("after preprocessing" in f[2] for f in found)


def test_preprocessed_fixture_without_forbidden_calls_passes() -> None:
    assert find_forbidden((FIXTURES / "preprocessor.F90").read_text()) == []


@pytest.mark.parametrize(
    "body",
    [
        "  external :: system\n  call run_it(system)",
        "  procedure(), pointer :: p\n  p => execute_command_line",
    ],
)
def test_forbidden_routine_passed_around_without_a_call_is_refused(body: str) -> None:
    assert any("is not allowed" in msg for _, _, msg in _refused(_kernel(body)))


def test_a_driver_reading_argv_and_writing_to_standard_streams_is_translated():
    # Nothing here touches a file: the helper is not refused (it is unsupported as a kernel,
    # with a reason), and the kernel beside it verifies with its WRITE(0) left out.
    from kernels.engine import translate_source

    source = (FIXTURES / "argv_driver_module.f90").read_text()
    result = translate_source(source, filename="argv_driver_module.f90")
    by_name = {k.name: k for k in result.kernels}
    assert by_name["relax"].status == "verified", by_name["relax"].diagnostics
    assert any("WRITE(0) left out of the kernel" in n for n in by_name["relax"].notes)
    helper = by_name["read_arguments"]
    assert helper.status == "unsupported"
    messages = [d.message for d in helper.diagnostics]
    assert any("COMMAND_ARGUMENT_COUNT reads the program's command line" in m for m in messages), (
        messages
    )
    assert any("GET_COMMAND_ARGUMENT reads the program's command line" in m for m in messages)

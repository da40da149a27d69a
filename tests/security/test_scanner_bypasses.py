"""The scanner bypasses found by the attack review are caught; a forbidden statement refuses its
program unit only, and the other kernels of the file still translate.

The scanner is the second line: tests/security/test_sandbox_containment.py shows the sandbox
holding when the scanner is not there at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kernels.engine.pipeline import find_kernels_and_exclusions, translate_source
from kernels.engine.report import ForbiddenStatementError
from kernels.engine.security import find_forbidden, program_units, scan_units


def _kernel(body: str, name: str = "k") -> str:
    return (
        f"subroutine {name}(n, a)\n"
        "  integer, intent(in) :: n\n"
        "  real(8), intent(inout) :: a(n)\n"
        "  integer :: st\n"
        f"{body}\n"
        f"end subroutine {name}\n"
    )


def _messages(source: str, **kwargs) -> list[str]:
    return [d.message for d in find_forbidden(source, **kwargs)]


@pytest.mark.parametrize(
    "body",
    [
        # a comment line between two continuation lines
        "  call sys&\n! note\n  &tem('id')",
        # a blank line between two continuation lines
        "  call sys&\n\n  &tem('id')",
        # both, and an indented comment
        "  call execute_&\n\n     ! still the same statement\n  &command_line('id')",
    ],
)
def test_comment_and_blank_lines_inside_a_free_form_continuation_join_the_statement(
    body: str,
) -> None:
    assert any("is not allowed" in m for m in _messages(_kernel(body)))


def test_comment_lines_inside_a_fixed_form_continuation_join_the_statement() -> None:
    source = (
        "      SUBROUTINE K(N, A)\n"
        "      DIMENSION A(N)\n"
        "      CALL SYS\n"
        "C     a comment between the lines\n"
        "\n"
        "     &TEM('id')\n"
        "      END\n"
    )
    assert any("system" in m for m in _messages(source, fixed_form=True))


@pytest.mark.parametrize(
    "statement",
    [
        "  st = kill(1, 9)",
        "  st = link('a', 'b')",
        "  st = rename('a', 'b')",
        "  st = unlink('a')",
        "  st = symlnk('/etc/shadow', 'x')",
        "  st = chdir('/')",
        "  st = chmod('x', 'a+rwx')",
        "  st = access('/etc/shadow', 'r')",
        "  st = stat('/etc/passwd', buf)",
        "  st = getcwd(path)",
        "  st = fork()",
        "  st = system('id')",
        "  st = getpid()",
        "  call kill(1, 9)",
        "  call link('a', 'b')",
        "  call sleep(100)",
        "  call getenv('HOME', s)",
        "  external kill\n  call run(kill)",
        "  intrinsic stat\n  call run(stat)",
        "  p => kill",
    ],
)
def test_process_and_file_extensions_are_refused_in_call_and_function_form(
    statement: str,
) -> None:
    assert any("is not allowed in a kernel" in m for m in _messages(_kernel(statement)))


@pytest.mark.parametrize(
    "statement",
    ["  allocate(b(n), stat=st)", "  a(1) = stats(2)", "  a(1) = a(1) + linked", "  killer = 1"],
)
def test_similar_harmless_names_stay_allowed(statement: str) -> None:
    assert find_forbidden(_kernel(statement)) == []


@pytest.mark.parametrize(
    "directive",
    [
        '#include "/etc/passwd"',
        "#include </etc/passwd>",
        '#include_next "x.h"',
        '#import "x.h"',
        '#embed "/etc/passwd"',
        '#inc\\\nlude "/etc/passwd"',
        '#\\\ninclude "/etc/passwd"',
        '#/**/include "/etc/passwd"',
        '#/* a\n comment */include "/etc/passwd"',
        '/**/#include "/etc/passwd"',
        '  #  include "/etc/passwd"',
        '??=include "/etc/passwd"',
        '%:include "/etc/passwd"',
        "#include MACRO_NAMING_A_FILE",
        '#if __has_include("/etc/shadow")\n#endif',
        '#pragma GCC dependency "/etc/passwd"',
    ],
)
def test_every_file_reading_preprocessor_form_is_refused(directive: str) -> None:
    source = directive + "\n" + _kernel("  a(1) = 1.0d0")
    found = find_forbidden(source)
    assert found and all(d.line <= 2 for d in found[:1]), found
    with pytest.raises(ForbiddenStatementError):
        scan_units(source)  # outside every unit: the whole file is refused


def test_fortran_include_line_is_refused_unless_the_file_was_uploaded() -> None:
    source = _kernel("  include 'consts.inc'")
    assert any("include 'consts.inc'" in m for m in _messages(source))
    assert find_forbidden(source, allowed_includes={"consts.inc"}) == []
    assert _messages(_kernel("  include '/etc/passwd'"), allowed_includes={"consts.inc"})


def test_include_directive_naming_an_uploaded_file_is_allowed() -> None:
    source = '#include "consts.h"\n' + _kernel("  a(1) = 1.0d0")
    assert find_forbidden(source, allowed_includes={"consts.h"}) == []
    split = '#inc\\\nlude "../consts.h"\n' + _kernel("  a(1) = 1.0d0")
    assert find_forbidden(split, allowed_includes={"consts.h"})


def test_program_units_are_found_with_their_line_ranges() -> None:
    source = (
        "module m\ncontains\n  subroutine inner()\n  end subroutine inner\nend module m\n"
        "real(8) function f(x)\n  real(8) :: x\n  f = x\nend function f\n"
        "subroutine s(a)\n  interface\n    subroutine cb() bind(c, name='x')\n"
        "    end subroutine\n  end interface\nend\n"
    )
    units = program_units(source.splitlines())
    assert [(u.kind, u.name, u.first_line, u.last_line) for u in units] == [
        ("module", "m", 1, 5),
        ("function", "f", 6, 9),
        ("subroutine", "s", 10, 15),
    ]


def test_a_forbidden_statement_refuses_only_its_program_unit() -> None:
    source = _kernel("  a(1) = 2.0d0 * a(1)", "good") + "\n" + _kernel("  call system('id')", "bad")
    kernels, excluded = find_kernels_and_exclusions(source, filename="two.f90")
    assert [k.name for k in kernels] == ["good"]
    assert [e.unit.name for e in excluded] == ["bad"]
    assert "system" in excluded[0].reason() and "lines 8-13" in excluded[0].reason()
    # the excluded unit is gone from the text every later stage (and gfortran) sees
    assert "system" not in kernels[0].fortran_source


def test_translate_reports_the_excluded_unit_and_still_translates_the_others() -> None:
    source = _kernel("  a(1) = 2.0d0 * a(1)", "good") + _kernel("  st = kill(1, 9)", "bad")
    result = translate_source(source, filename="two.f90", verify=False)
    by_name = {k.name: k for k in result.kernels}
    assert by_name["good"].status == "translated"
    assert by_name["bad"].status == "failed"
    assert by_name["bad"].diagnostics[0].message == "forbidden: kill is not allowed in a kernel"
    assert by_name["bad"].code == ""
    assert any("excluded" in n for n in by_name["bad"].notes)


def test_a_file_whose_every_unit_is_forbidden_is_refused(tmp_path: Path) -> None:
    from fortranspire_site.cli import main

    path = tmp_path / "bad.f90"
    path.write_text(_kernel("  call execute_command_line('id')"))
    assert main(["translate", str(path), "--json", "--no-verify"]) == 2


def test_cli_translate_json_lists_the_excluded_unit(tmp_path: Path, capsys) -> None:
    from fortranspire_site.cli import main

    path = tmp_path / "two.f90"
    path.write_text(_kernel("  a(1) = 2.0d0", "good") + _kernel("  st = rename('a','b')", "bad"))
    code = main(["translate", str(path), "--json", "--no-verify"])
    data = json.loads(capsys.readouterr().out)
    statuses = {k["name"]: k["status"] for k in data["kernels"]}
    assert statuses == {"good": "translated", "bad": "failed"}
    assert code == 1  # not every kernel translated


def test_a_comment_opener_in_a_string_does_not_hide_a_directive() -> None:
    source = (
        "subroutine k(a)\n  real(8) :: a(1)\n  print *, '/*'\n"
        "#include \"/etc/passwd\"\n  print *, '*/'\nend subroutine k\n"
    )
    assert [d.line for d in find_forbidden(source)] == [4]


def test_profile_lists_the_excluded_unit_and_profiles_the_others() -> None:
    from kernels.engine.profile import profile_source

    source = _kernel("  a(1) = 2.0d0 * a(1)", "good") + _kernel("  st = unlink('x')", "bad")
    result = profile_source(source, filename="two.f90")
    assert [k.name for k in result.kernels] == ["good"]
    (excluded,) = result.to_dict()["excluded"]
    assert excluded["name"] == "bad" and "unlink" in excluded["reason"]


@pytest.mark.parametrize(
    "body",
    [
        # the standard streams keep their numbers only while nothing reconnects them
        "  open(unit=6, file='out.txt')\n  write(6, *) a",
        "  open(newunit=st, file='err.txt')\n  write(0, *) a",
        # a unit that is not 0/5/6 as written: a file (gfortran creates fort.N)
        "  write(06 + 1, *) a",
        "  write(0_8, *) a",
        "  write(unit=st, fmt=*) a",
        "  read(unit=0, fmt=*) a",
        "  flush(st)",
        # an allowed write does not hide what follows it on the line
        "  write(0, *) a; call execute_command_line('id')",
        "  write(6, *) a; i = system('id')",
        "  flush(6); open(10, file='x')",
        # reading the command line is allowed, the environment and a shell are not
        "  call get_command_argument(1, s)\n  call get_environment_variable('HOME', s)",
        "  n = command_argument_count()\n  call system('ls')",
    ],
)
def test_standard_streams_and_argv_open_no_way_to_files_or_processes(body: str) -> None:
    assert _messages(_kernel(body)), body


def test_standard_streams_and_argv_are_allowed_in_both_source_forms() -> None:
    free = _kernel(
        "  write(0, *) 'bad cell', n\n  write (6, '(a)') 'ok'\n  write(unit=0, fmt=*) a\n"
        "  write(fmt=*, unit=6) a\n  flush(6)\n"
        "  st = command_argument_count()\n  call get_command_argument(1, s, st)\n"
        "  call get_command(s)"
    )
    assert _messages(free) == []
    fixed = (
        "      SUBROUTINE K(N, A)\n"
        "      DIMENSION A(N)\n"
        "      CHARACTER*16 S\n"
        "      WRITE ( 0 , * ) N\n"
        "      WRITE(6,'(A)') 'OK'\n"
        "      CALL GET COMMAND ARGUMENT(1, S)\n"
        "      CALL GETARG(1, S)\n"
        "      WRITE(9,*) N\n"
        "      END\n"
    )
    assert [(d.line, d.message.split(" (")[0]) for d in find_forbidden(fixed, fixed_form=True)] == [
        (8, "forbidden: WRITE to unit 9")
    ]


def test_a_module_whose_helper_reads_argv_is_not_refused_but_its_file_io_is() -> None:
    helper = (
        "module driver\ncontains\n"
        "subroutine args(n)\n  integer :: n\n  character(len=16) :: s\n"
        "  if (command_argument_count() < 1) then\n    write(0, *) 'usage: prog n'\n"
        "    return\n  end if\n  call get_command_argument(1, s)\n  read(s, *) n\n"
        "end subroutine args\nend module driver\n"
    )
    assert scan_units(helper).excluded == []
    with_file = helper.replace("    return\n", "    open(10, file='log.txt')\n    return\n")
    with pytest.raises(ForbiddenStatementError) as info:
        scan_units(with_file)  # the module is the only unit: the whole file is refused
    assert "OPEN statement" in info.value.message

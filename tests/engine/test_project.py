"""Multi-file projects: ``translate FILE [FILE ...] [-I DIR]... [-D NAME[=VALUE]]...``.

The contract: every kernel carries the ``file`` it is in (as given), modules are visible across
files in any order, ``-I``/``-D`` feed the preprocessor, and nothing outside the given files and
directories can be read.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fortranspire_site.cli import main
from kernels.engine.project import parse_defines, project_from_texts
from kernels.engine.report import EngineError

PROJECTS = Path(__file__).resolve().parents[1] / "fixtures" / "projects"
TWO = PROJECTS / "two_file_module"
BENCH = PROJECTS / "bench_include"
MIXED = PROJECTS / "mixed_form"


def translate(capsys, *argv: str) -> tuple[int, dict, str]:
    code = main(["translate", *argv, "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def test_two_files_form_one_project_in_any_order_with_each_kernel_under_its_file(capsys):
    kernels_file = str(TWO / "field_kernels.f90")
    common_file = str(TWO / "grid_common.f90")
    code, payload, _ = translate(capsys, kernels_file, common_file)
    assert code == 0
    assert payload["file"] == f"{kernels_file} {common_file}"
    got = {k["name"]: (k["file"], k["status"]) for k in payload["kernels"]}
    assert got == {
        "relax_field": (kernels_file, "verified"),
        "fill_boundary": (common_file, "verified"),  # the common module's own kernel
    }
    for k in payload["kernels"]:
        assert k["coverage"]["loops_run"] == k["coverage"]["loops"] > 0


def test_a_project_of_fixed_and_free_form_files_compiles_each_file_in_its_own_form(capsys):
    # Given free form first: the fixed-form module must still compile before its users.
    driver, relax, legacy = (
        str(MIXED / n) for n in ("driver.f90", "relax_mod.f90", "legacy_smooth.f")
    )
    code, payload, _ = translate(capsys, driver, relax, legacy, "-I", str(MIXED / "include"))
    assert code == 0, payload
    got = {k["name"]: (k["file"], k["status"]) for k in payload["kernels"]}
    assert got == {
        "driver_loop1": (driver, "verified"),  # a program's nest, using the fixed-form module
        "relax": (relax, "verified"),  # calls the fixed-form smoother
        "lsmooth": (legacy, "verified"),  # fixed form, with a fixed-form INCLUDE
    }
    for k in payload["kernels"]:
        assert k["coverage"]["loops_run"] == k["coverage"]["loops"] > 0


def test_each_kernel_of_a_mixed_project_is_compiled_with_the_other_forms_units_around_it():
    from kernels.engine import find_project_kernels
    from kernels.engine.project import project_from_paths

    names = [str(MIXED / n) for n in ("legacy_smooth.f", "relax_mod.f90", "driver.f90")]
    project = project_from_paths(names, include_dirs=[str(MIXED / "include")])
    kernels = {k.name: k for k in find_project_kernels(project)}
    relax = kernels["relax"]
    # Modules first, in USE order: the fixed-form LEGCON before relax_mod, which holds the kernel.
    assert [p.file for p in relax.compiled_before] == [names[0]]
    assert "MODULE LEGCON" in relax.compiled_before[0].text
    assert relax.fortran_source.startswith("module relax_mod")
    assert "SUBROUTINE LSMOOTH" in relax.compiled_after[0].text
    legacy = kernels["lsmooth"]
    assert [p.file for p in legacy.compiled_before] == [names[0], names[1]]
    assert legacy.fortran_source.lstrip().startswith("SUBROUTINE LSMOOTH")
    assert legacy.compiled_after == []
    # A program's nest: its subroutine alone, after every unit of the project.
    nest = kernels["driver_loop1"]
    assert nest.fortran_source.startswith("subroutine driver_loop1(")
    assert [p.file for p in nest.compiled_before] == names[:2] + [names[0]]


def test_an_include_directory_and_a_define_reach_the_preprocessor(capsys):
    source = str(BENCH / "stencil_bench.F90")
    code, payload, _ = translate(
        capsys, source, "-I", str(BENCH / "include"), "-D", "COEF=0.25d0", "--size", "n=9"
    )
    (k,) = payload["kernels"]
    assert code == 0 and k["status"] == "verified" and k["file"] == source
    assert "0.25" in k["code"]  # the -D value, through cpp
    assert k["coverage"] == {"loops": 1, "loops_run": 1, "lines": 2, "lines_run": 2}


def test_without_the_include_directory_the_header_is_not_found(capsys):
    source = str(BENCH / "stencil_bench.F90")
    code, payload, err = translate(capsys, source, "-D", "COEF=0.25d0")
    assert code == 2 and payload["kernels"] == []
    assert "bench.h" in payload["error"]["message"]
    assert f"{source}:3:" in err  # the #include line


def test_nothing_outside_the_given_files_and_directories_is_readable(capsys, tmp_path):
    secret = tmp_path / "outside" / "leak.h"
    secret.parent.mkdir()
    secret.write_text("integer, parameter :: top_secret_value_4711 = 1\n")
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    (src_dir / "inc").mkdir()
    for spelling in ('"../outside/leak.h"', f'"{secret}"', '"/etc/passwd"'):
        kernel = src_dir / "k.F90"
        kernel.write_text(
            f"#include {spelling}\n"
            "subroutine k(n, a)\n  integer, intent(in) :: n\n  real(8) :: a(n)\n"
            "  a = 1\nend subroutine\n"
        )
        code, payload, err = translate(capsys, str(kernel), "-I", str(src_dir / "inc"))
        assert code == 2, spelling
        assert "top_secret_value_4711" not in json.dumps(payload) + err
        assert "root:" not in json.dumps(payload) + err
        assert "not among the given files" in payload["error"]["message"], payload["error"]


def test_a_fortran_include_line_is_resolved_from_the_include_directories(tmp_path, capsys):
    (tmp_path / "inc").mkdir()
    (tmp_path / "inc" / "consts.inc").write_text("real(8), parameter :: scale = 3.0d0\n")
    src = tmp_path / "scale.f90"
    src.write_text(
        "subroutine scale_it(n, a)\n  implicit none\n  include 'consts.inc'\n"
        "  integer, intent(in) :: n\n  real(8), intent(inout) :: a(n)\n  integer :: i\n"
        "  do i = 1, n\n    a(i) = scale * a(i)\n  end do\nend subroutine\n"
    )
    code, payload, _ = translate(capsys, str(src), "-I", str(tmp_path / "inc"))
    (k,) = payload["kernels"]
    assert code == 0 and k["status"] == "verified"
    assert k["coverage"]["loops_run"] == 1
    assert k["line"] == 1  # the lines after the include keep their numbers


def test_defines_are_names_with_optional_values():
    assert parse_defines(["A", "B=2", "C="]) == {"A": None, "B": "2", "C": ""}
    with pytest.raises(EngineError):
        parse_defines(["1BAD=2"])


def test_api_style_files_pick_sources_and_leave_headers_to_includes():
    project = project_from_texts(
        {"src/k.f90": "x", "include/h.inc": "y", "include/old.f90": "z"},
        include_dirs=["include"],
        defines={"N": "4"},
    )
    assert project.sources == ["src/k.f90"]
    assert project.include_dirs == ["include"] and project.defines == {"N": "4"}


def test_a_parameter_is_rewritten_in_place_in_free_and_fixed_form_keeping_every_column():
    from kernels.engine.project import Project, parameter_definitions, with_parameters

    free = (
        "module grid\n  integer, parameter :: nx = 401, ny = 401, &\n"
        "                        nstep = 2000\n  integer, parameter :: isrc = nx / 2\nend module\n"
    )
    fixed = (
        "      SUBROUTINE S\n      INTEGER NX, NY\n      PARAMETER (NX = 401,\n"
        "     &           NY = 300)\n      END\n"
    )
    project = Project({"grid.f90": free, "s.f": fixed}, ["grid.f90", "s.f"])
    found = {
        (d.file, d.name): (d.line, d.value, d.mentions) for d in parameter_definitions(project)
    }
    assert found[("grid.f90", "nstep")] == (3, 2000, set())
    assert found[("grid.f90", "isrc")] == (4, None, {"nx"})  # derived: it follows nx
    assert found[("s.f", "ny")] == (4, 300, set())
    shrunk = with_parameters(
        project, {"nx": 13, "nstep": 3, "ny": 9}, {"nx": 401, "nstep": 2000, "ny": 300}
    )
    assert shrunk.files["grid.f90"].split("\n")[1:3] == [
        "  integer, parameter :: nx =  13, ny = 401, &",  # ny is 401 here, not 300: kept
        "                        nstep =    3",
    ]
    assert shrunk.files["s.f"].split("\n")[2:4] == [
        "      PARAMETER (NX =  13,",  # blanks are insignificant, columns still count
        "     &           NY =   9)",
    ]
    assert project.files["grid.f90"] == free  # the project itself is unchanged


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            [str(TWO / "field_kernels.f90"), str(TWO / "grid_common.f90")],
            {"relax_field": "field_kernels.f90", "fill_boundary": "grid_common.f90"},
        ),
        (
            [str(BENCH / "stencil_bench.F90"), "-I", str(BENCH / "include"), "-D", "COEF=0.25d0"],
            {"bench_stencil": "stencil_bench.F90"},
        ),
        (
            [
                *(str(MIXED / n) for n in ("driver.f90", "relax_mod.f90", "legacy_smooth.f")),
                "-I",
                str(MIXED / "include"),
            ],
            {"driver_loop1": "driver.f90", "relax": "relax_mod.f90", "lsmooth": "legacy_smooth.f"},
        ),
    ],
    ids=["two_file_module", "bench_include", "mixed_form"],
)
def test_each_project_verifies_on_the_gpu_target_with_every_loop_run(
    capsys, monkeypatch, argv, expected
):
    # Without a GPU the GPU ports run on numba's CUDA simulator, at its smaller sizes.
    from numba import cuda

    if not cuda.is_available():
        monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
    code, payload, _ = translate(capsys, *argv, "--target", "gpu")
    assert code == 0
    got = {k["name"]: (Path(k["file"]).name, k["status"]) for k in payload["kernels"]}
    assert got == {name: (file, "verified") for name, file in expected.items()}
    for k in payload["kernels"]:
        assert k["device"] in ("gpu", "simulator")
        assert k["coverage"]["loops_run"] == k["coverage"]["loops"] > 0

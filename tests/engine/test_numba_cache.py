"""The numba cache of verification: compiled ports are reused, and only the port's sandbox sees it."""

from __future__ import annotations

import shutil

import pytest

from kernels.engine import translate_source, verify

pytestmark = pytest.mark.skipif(
    shutil.which("gfortran") is None, reason="gfortran is not installed"
)

SCALE = """
subroutine scale(n, a, y)
  integer, intent(in) :: n
  real(8), intent(in) :: a
  real(8), intent(inout) :: y(n)
  integer :: i
  do i = 1, n
    y(i) = a * y(i)
  end do
end subroutine scale
"""
LOADED = "numba: the compiled port was loaded from this tenant's cache"


@pytest.fixture
def sandbox_calls(monkeypatch):
    """(argv, rw_paths) of every sandboxed process verification starts (run now or started
    ahead, as the port's is)."""
    calls: list[tuple[list[str], list[str]]] = []
    for name in ("run_sandboxed", "start_sandboxed"):
        real = getattr(verify, name)

        def recording(argv, real=real, **kwargs):
            calls.append(([str(a) for a in argv], [str(p) for p in kwargs.get("rw_paths", ())]))
            return real(argv, **kwargs)

        monkeypatch.setattr(verify, name, recording)
    return calls


def test_a_second_verification_with_new_inputs_loads_the_port_from_the_cache(tmp_path):
    first = translate_source(SCALE, sizes={"n": 17}, seed=1, numba_cache_dir=tmp_path)
    second = translate_source(SCALE, sizes={"n": 23}, seed=2, numba_cache_dir=tmp_path)
    assert first.kernels[0].status == second.kernels[0].status == "verified"
    assert LOADED not in first.kernels[0].notes
    assert LOADED in second.kernels[0].notes
    assert list((tmp_path / "numba").rglob("*.nbi")), "numba wrote no cache index"


def test_only_the_ports_sandbox_gets_the_cache_directory(tmp_path, sandbox_calls):
    result = translate_source(SCALE, sizes={"n": 17}, numba_cache_dir=tmp_path)
    assert result.kernels[0].status == "verified"
    gfortran = [rw for argv, rw in sandbox_calls if "gfortran" in argv[0]]
    runs = [(argv, rw) for argv, rw in sandbox_calls if argv[-1].endswith(".json")]
    assert gfortran and all(rw == [] for rw in gfortran)
    by_spec = {argv[-1]: rw for argv, rw in runs}
    assert by_spec["fsp_ref.json"] == []
    assert by_spec["fsp_port.json"] == [str(tmp_path)]


def test_without_a_cache_directory_nothing_is_shared_between_runs(sandbox_calls):
    first = translate_source(SCALE, sizes={"n": 17})
    second = translate_source(SCALE, sizes={"n": 17}, seed=5)
    assert LOADED not in first.kernels[0].notes + second.kernels[0].notes
    assert all(rw == [] for _, rw in sandbox_calls)

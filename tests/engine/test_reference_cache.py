"""The reference cache: a verification with a new seed reuses the gfortran build of the original,
anything that changes what gfortran reads builds again, and a damaged entry is rebuilt."""

from __future__ import annotations

import shutil
import stat

import pytest

from kernels.engine import reference_cache, translate_source, verify

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
LOADED = "gfortran: the original's build was loaded from this tenant's cache"


@pytest.fixture
def sandbox_calls(monkeypatch):
    """(argv, ro_paths + rw_paths) of every sandboxed process verification starts."""
    calls: list[tuple[list[str], list[str]]] = []
    for name in ("run_sandboxed", "start_sandboxed"):
        real = getattr(verify, name)

        def recording(argv, real=real, **kwargs):
            seen = [*kwargs.get("ro_paths", ()), *kwargs.get("rw_paths", ())]
            calls.append(([str(a) for a in argv], [str(p) for p in seen]))
            return real(argv, **kwargs)

        monkeypatch.setattr(verify, name, recording)
    return calls


def gfortran_runs(calls) -> int:
    return sum(1 for argv, _ in calls if argv[0] == verify.GFORTRAN)


def verified(source=SCALE, **kwargs):
    result = translate_source(source, **kwargs)
    kernel = result.kernels[0]
    assert kernel.status == "verified", kernel.notes
    return kernel


def test_a_new_seed_runs_the_cached_build_on_new_inputs(tmp_path, sandbox_calls):
    first = verified(sizes={"n": 17}, seed=1, reference_cache_dir=tmp_path)
    assert gfortran_runs(sandbox_calls) == 1
    assert LOADED not in first.notes

    second = verified(sizes={"n": 17}, seed=2, reference_cache_dir=tmp_path)
    assert gfortran_runs(sandbox_calls) == 1, "gfortran ran again for a new seed"
    assert LOADED in second.notes
    # The reference still ran, on the new seed's inputs: the errors are those of other data.
    runs = [argv for argv, _ in sandbox_calls if argv[-1] == "fsp_ref.json"]
    assert len(runs) == 2
    assert second.coverage == first.coverage
    assert second.timings_ms["gfortran_compile"] < first.timings_ms["gfortran_compile"]


@pytest.mark.parametrize(
    "change",
    [
        {"sizes": {"n": 18}},  # the wrapper's bounds
        {"source": SCALE.replace("a * y(i)", "y(i) * a")},
    ],
    ids=["sizes", "source"],
)
def test_another_size_or_source_builds_again(tmp_path, sandbox_calls, change):
    verified(sizes={"n": 17}, seed=1, reference_cache_dir=tmp_path)
    args = {"sizes": {"n": 17}, "seed": 2, "reference_cache_dir": tmp_path, **change}
    again = verified(args.pop("source", SCALE), **args)
    assert gfortran_runs(sandbox_calls) == 2
    assert LOADED not in again.notes


def test_other_flags_or_another_compiler_build_again(tmp_path, sandbox_calls, monkeypatch):
    verified(sizes={"n": 17}, reference_cache_dir=tmp_path)
    monkeypatch.setattr(
        verify, "GFORTRAN_REFERENCE_FLAGS", (*verify.GFORTRAN_REFERENCE_FLAGS, "-fno-inline")
    )
    verified(sizes={"n": 17}, seed=2, reference_cache_dir=tmp_path)
    assert gfortran_runs(sandbox_calls) == 2
    real = reference_cache.gfortran_identity
    monkeypatch.setattr(reference_cache, "gfortran_identity", lambda g: real(g) + " (upgraded)")
    verified(sizes={"n": 17}, seed=3, reference_cache_dir=tmp_path)
    assert gfortran_runs(sandbox_calls) == 3


def test_each_tenant_directory_keeps_its_own_builds(tmp_path, sandbox_calls):
    tenant_a, tenant_b = tmp_path / "a", tmp_path / "b"
    verified(sizes={"n": 17}, reference_cache_dir=tenant_a)
    other = verified(sizes={"n": 17}, seed=2, reference_cache_dir=tenant_b)
    assert gfortran_runs(sandbox_calls) == 2
    assert LOADED not in other.notes
    assert len(list(tenant_a.iterdir())) == len(list(tenant_b.iterdir())) == 1


@pytest.mark.parametrize("damage", ["truncate", "flip", "symlink"])
def test_a_damaged_entry_is_rebuilt_and_replaced(tmp_path, sandbox_calls, damage):
    cache = tmp_path / "cache"
    verified(sizes={"n": 17}, reference_cache_dir=cache)
    (entry,) = cache.iterdir()
    good = entry.read_bytes()
    if damage == "truncate":
        entry.write_bytes(good[: len(good) // 2])
    elif damage == "flip":
        entry.write_bytes(good[:-100] + bytes([good[-100] ^ 0xFF]) + good[-99:])
    else:
        target = tmp_path / "elsewhere"
        target.write_bytes(good)
        entry.unlink()
        entry.symlink_to(target)

    again = verified(sizes={"n": 17}, seed=2, reference_cache_dir=cache)
    assert gfortran_runs(sandbox_calls) == 2
    assert LOADED not in again.notes
    assert not entry.is_symlink() and entry.read_bytes() == good
    third = verified(sizes={"n": 17}, seed=3, reference_cache_dir=cache)
    assert gfortran_runs(sandbox_calls) == 2 and LOADED in third.notes


def test_entries_are_private_and_no_sandbox_sees_the_cache(tmp_path, sandbox_calls):
    cache = tmp_path / "cache"
    verified(sizes={"n": 17}, reference_cache_dir=cache)
    verified(sizes={"n": 17}, seed=2, reference_cache_dir=cache)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    (entry,) = cache.iterdir()
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert sandbox_calls and all(
        not any(p.startswith(str(cache)) for p in paths) for _, paths in sandbox_calls
    )


def test_the_cache_keeps_only_its_most_recently_used_entries(tmp_path, monkeypatch):
    monkeypatch.setattr(reference_cache, "MAX_ENTRIES", 2)
    lib = tmp_path / "lib.so"
    keys = []
    for n in range(3):
        lib.write_bytes(b"\x7fELF" + bytes([n]) * 64)
        key = reference_cache.build_key(files={"f.f90": str(n)}, argv=["-O2"], compiler="gfortran")
        keys.append(key)
        reference_cache.store(tmp_path / "cache", key, lib)
    out = tmp_path / "out.so"
    assert not reference_cache.load(tmp_path / "cache", keys[0], out)
    assert reference_cache.load(tmp_path / "cache", keys[2], out)
    assert out.read_bytes() == b"\x7fELF" + bytes([2]) * 64

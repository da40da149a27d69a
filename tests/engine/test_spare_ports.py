"""Spare port sandboxes: kept warm for the same tenant's next verification, never anyone else's."""

from __future__ import annotations

import shutil
import time

import pytest

from kernels.engine import spare_ports, translate_source, verify
from kernels.engine.spare_ports import SparePorts

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


@pytest.fixture
def spares():
    pool = SparePorts()
    yield pool
    pool.close()


def held_soon(pool: SparePorts, count: int, wait_s: float = 30.0) -> bool:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if pool.held() == count:
            return True
        time.sleep(0.02)
    return False


def test_a_spare_goes_only_to_the_same_device_and_tenant_cache(spares, tmp_path):
    tenant_a, tenant_b = tmp_path / "a", tmp_path / "b"
    tenant_b.mkdir()
    spares.prepare(device="cpu", numba_cache_dir=tenant_a, keep=2)
    assert held_soon(spares, 1)
    assert spares.take(device="cpu", numba_cache_dir=tenant_b) is None
    assert spares.take(device="simulator", numba_cache_dir=tenant_a) is None
    assert spares.take(device="cpu", numba_cache_dir=None) is None
    port = spares.take(device="cpu", numba_cache_dir=tenant_a)
    assert port is not None and port.usable()
    assert port.numba_cache_dir == tenant_a
    assert spares.take(device="cpu", numba_cache_dir=tenant_a) is None  # one use each
    port.close()


def test_only_the_most_recently_prepared_spares_are_kept(spares, tmp_path):
    spares.prepare(device="cpu", numba_cache_dir=tmp_path / "old", keep=1)
    assert held_soon(spares, 1)
    (old,) = (p for p, _ in spares._spares.values())
    spares.prepare(device="cpu", numba_cache_dir=tmp_path / "new", keep=1)
    deadline = time.monotonic() + 30
    while old.workdir.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not old.workdir.exists() and not old.process.running
    assert spares.take(device="cpu", numba_cache_dir=tmp_path / "old") is None
    new = spares.take(device="cpu", numba_cache_dir=tmp_path / "new")
    assert new is not None
    new.close()


def test_an_idle_spare_is_ended_after_its_time(tmp_path):
    pool = SparePorts(idle_s=0.2)
    try:
        pool.prepare(device="cpu", numba_cache_dir=tmp_path / "a", keep=2)
        assert held_soon(pool, 1)
        (idle,) = (p for p, _ in pool._spares.values())
        time.sleep(0.3)
        pool.prepare(device="cpu", numba_cache_dir=tmp_path / "b", keep=2)  # wakes the sweep
        deadline = time.monotonic() + 30
        while idle.workdir.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not idle.workdir.exists() and not idle.process.running
        assert pool.take(device="cpu", numba_cache_dir=tmp_path / "a") is None
        assert held_soon(pool, 1)  # b's, which is not idle yet
    finally:
        pool.close()


def test_a_spare_whose_cache_was_replaced_or_whose_harness_died_is_not_used(spares, tmp_path):
    cache = tmp_path / "cache"
    spares.prepare(device="cpu", numba_cache_dir=cache, keep=2)
    assert held_soon(spares, 1)
    shutil.rmtree(cache)  # e.g. an operator emptied the tenant's cache
    cache.mkdir()
    assert spares.take(device="cpu", numba_cache_dir=cache) is None

    spares.prepare(device="cpu", numba_cache_dir=cache, keep=2)
    assert held_soon(spares, 1)
    (port,) = (p for p, _ in spares._spares.values())
    port.process.kill()
    assert spares.take(device="cpu", numba_cache_dir=cache) is None
    assert not port.workdir.exists()


@pytest.mark.skipif(shutil.which("gfortran") is None, reason="gfortran is not installed")
def test_the_next_verification_of_the_tenant_runs_in_its_warm_spare(tmp_path, monkeypatch):
    started: list[object] = []
    real_start = verify.PortSandbox.start

    def counting(**kwargs):
        started.append(kwargs)
        return real_start(**kwargs)

    monkeypatch.setattr(verify.PortSandbox, "start", staticmethod(counting))
    try:
        first = translate_source(SCALE, sizes={"n": 17}, seed=1, numba_cache_dir=tmp_path)
        spare_ports.SPARE_PORTS.prepare(device="cpu", numba_cache_dir=tmp_path, keep=1)
        assert held_soon(spare_ports.SPARE_PORTS, 1)
        assert len(started) == 2  # the first request's, then the spare
        (spare,) = (p for p, _ in spare_ports.SPARE_PORTS._spares.values())

        second = translate_source(SCALE, sizes={"n": 17}, seed=2, numba_cache_dir=tmp_path)
        assert len(started) == 2, "the second request started a sandbox of its own"
        assert spare_ports.SPARE_PORTS.held() == 0
        assert not spare.workdir.exists() and "elapsed_s" in spare.process.finish().stdout
        assert first.kernels[0].status == second.kernels[0].status == "verified"
        assert "port_start" in second.kernels[0].timings_ms
    finally:
        spare_ports.SPARE_PORTS.close()

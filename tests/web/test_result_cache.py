"""The per-tenant result cache: an identical request is answered from the stored proof."""

from __future__ import annotations

import shutil

import pytest

from kernels import result_cache
from kernels.engine import verify
from kernels.services import kernel_translate

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(shutil.which("gfortran") is None, reason="gfortran is not installed"),
]

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
def sandbox_runs(monkeypatch, settings, tmp_path):
    """Counts every sandboxed process verification starts (gfortran, reference, port)."""
    settings.FORTRANSPIRE_CACHE_DIR = tmp_path / "cache"
    calls: list[list[str]] = []
    for name in ("run_sandboxed", "start_sandboxed"):  # the port's sandbox is started ahead
        real = getattr(verify, name)

        def counting(argv, real=real, **kwargs):
            calls.append(list(argv))
            return real(argv, **kwargs)

        monkeypatch.setattr(verify, name, counting)
    return calls


def translate(tenant, **overrides):
    args = {"source": SCALE, "target": "cpu", "channel": "api", "sizes": {"n": 19}, "seed": 3}
    args.update(overrides)
    return kernel_translate(tenant=tenant, **args)


def test_identical_request_is_served_from_the_stored_proof_without_running_anything(
    tenant_a, sandbox_runs
):
    first_run, first = translate(tenant_a)
    assert first_run.status == "verified" and first_run.cache_key
    assert first.original_run_id is None and not first.kernels[0].cached
    runs_after_first = len(sandbox_runs)
    assert runs_after_first >= 3

    second_run, second = translate(tenant_a)
    assert len(sandbox_runs) == runs_after_first, "a cache hit must not start a sandbox"
    data = second.to_dict()
    assert data["cached"] is True
    assert data["original_run_id"] == str(first_run.pk)
    assert [k["cached"] for k in data["kernels"]] == [True]
    assert data["kernels"][0]["status"] == "verified"
    assert data["kernels"][0]["code"] == first.kernels[0].code
    assert set(data["kernels"][0]["timings_ms"]) == {"cache"}
    # The hit is recorded in the history too, pointing at the proof, and is not a proof itself.
    assert second_run.pk != first_run.pk
    assert second_run.report["original_run_id"] == str(first_run.pk)
    assert second_run.cache_key == ""


def test_another_tenant_with_the_same_source_is_not_served_the_first_tenants_result(
    tenant_a, tenant_b, sandbox_runs
):
    run_a, _ = translate(tenant_a)
    before = len(sandbox_runs)
    run_b, result_b = translate(tenant_b)
    assert result_b.original_run_id is None
    assert not result_b.kernels[0].cached
    assert len(sandbox_runs) > before
    assert run_b.status == "verified"
    # Same content address, but each proof lives in its own tenant's schema.
    assert run_b.cache_key == run_a.cache_key
    assert result_cache.numba_cache_dir(tenant_a) != result_cache.numba_cache_dir(tenant_b)
    # Tenant b's gfortran ran (nothing of tenant a's builds is reused), into b's own cache.
    assert sum(1 for argv in sandbox_runs[before:] if argv[0] == verify.GFORTRAN) == 1
    ref_a, ref_b = (result_cache.reference_cache_dir(t) for t in (tenant_a, tenant_b))
    assert ref_a != ref_b and len(list(ref_a.iterdir())) == len(list(ref_b.iterdir())) == 1


def test_a_new_seed_reuses_the_tenants_gfortran_build_and_numba_code(tenant_a, sandbox_runs):
    translate(tenant_a)
    before = len(sandbox_runs)
    run, result = translate(tenant_a, seed=4)
    assert run.status == "verified" and result.original_run_id is None
    assert not any(argv[0] == verify.GFORTRAN for argv in sandbox_runs[before:])
    notes = result.kernels[0].notes
    assert "gfortran: the original's build was loaded from this tenant's cache" in notes
    assert "numba: the compiled port was loaded from this tenant's cache" in notes


def test_a_different_seed_or_size_is_verified_again(tenant_a, sandbox_runs):
    translate(tenant_a)
    for change in ({"seed": 4}, {"sizes": {"n": 20}}, {"kernel": "scale"}):
        before = len(sandbox_runs)
        _, result = translate(tenant_a, **change)
        assert result.original_run_id is None, change
        assert len(sandbox_runs) > before, change


def test_an_engine_upgrade_invalidates_stored_proofs_and_numba_caches(
    tenant_a, sandbox_runs, monkeypatch
):
    first_run, _ = translate(tenant_a)
    old_dir = result_cache.numba_cache_dir(tenant_a)
    old_builds = result_cache.reference_cache_dir(tenant_a)
    assert result_cache.ENGINE_VERSION in old_dir.parts
    assert list(old_builds.iterdir())

    monkeypatch.setattr(result_cache, "ENGINE_VERSION", "9999.0.0-test")
    monkeypatch.setattr(result_cache, "_pruned_versions", type(result_cache._pruned_versions)())
    before = len(sandbox_runs)
    second_run, second = translate(tenant_a)
    assert second.original_run_id is None
    assert len(sandbox_runs) > before
    assert second_run.cache_key and second_run.cache_key != first_run.cache_key
    new_dir = result_cache.numba_cache_dir(tenant_a)
    assert "9999.0.0-test" in new_dir.parts
    assert not old_dir.exists(), "the old engine's compiled code must be removed"
    assert not old_builds.exists(), "the old engine's gfortran builds must be removed"


def test_an_unverified_translation_is_not_stored_as_a_proof(tenant_a, sandbox_runs):
    run, result = translate(tenant_a, verify=False)
    assert result.kernels[0].status == "translated"
    assert run.cache_key == ""
    assert sandbox_runs == []
    _, again = translate(tenant_a, verify=False)
    assert again.original_run_id is None


def test_a_served_answer_counts_no_llm_usage_of_its_own(tenant_a, sandbox_runs):
    from kernels.services import kernel_run_record

    key = result_cache.result_cache_key(
        sources={"input.f90": SCALE},
        target="cpu",
        sizes={"n": 19},
        seed=3,
        options={"kernel": "", "verify": True, "llm": False},
    )
    report = {
        "file": "input.f90",
        "target": "cpu",
        "kernels": [
            {
                "name": "scale",
                "status": "verified",
                "device": "cpu",
                "llm_calls": 2,
                "llm_tokens": 900,
                "code": "def scale(n, a, y):\n    pass\n",
            }
        ],
    }
    original = kernel_run_record(
        tenant=tenant_a,
        channel="api",
        status="verified",
        source=SCALE,
        target="cpu",
        report=report,
        llm_calls=2,
        llm_tokens=900,
        cache_key=key,
    )
    run, result = translate(tenant_a)
    assert sandbox_runs == []
    assert result.original_run_id == str(original.pk)
    assert result.kernels[0].llm_calls == 0 and result.kernels[0].llm_tokens == 0
    assert run.llm_calls == 0 and run.llm_tokens == 0
    assert "made 2 LLM call(s)" in result.kernels[0].notes[0]

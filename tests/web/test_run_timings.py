"""The run page shows where a translation's time went: a bar per kernel, server-rendered."""

from __future__ import annotations

import re

import pytest

from kernels.services import kernel_run_record
from tenants import services as tenant_services

pytestmark = pytest.mark.django_db

TIMINGS = {
    "parse": 100.0,
    "analyse": 20.0,
    "generate": 30.0,
    "gfortran_compile": 400.0,
    "reference_run": 300.0,
    "numba_compile": 1500.0,
    "port_run": 800.0,
    "compare": 50.0,
}


@pytest.fixture
def member(tenant_a, tenant_client, django_user_model):
    user = django_user_model.objects.create_user("timer", password="pw-for-tests-123")
    tenant_services.membership_set(tenant=tenant_a, user=user, role="member")
    client = tenant_client(tenant_a)
    client.force_login(user)
    return client


def _run(tenant, report):
    return kernel_run_record(
        tenant=tenant,
        channel="api",
        status="verified",
        source="subroutine heat\nend subroutine\n",
        target="cpu",
        kernel_names=["heat"],
        report=report,
    )


def test_run_page_draws_each_stage_on_the_critical_path_with_its_time(member, tenant_a):
    run = _run(
        tenant_a,
        {
            "file": "h.f90",
            "target": "cpu",
            "kernels": [{"name": "heat", "status": "verified", "timings_ms": TIMINGS}],
        },
    )
    html = member.get(f"/runs/{run.id}/").content.decode()
    # The critical path: 150 ms of translator, then max(700 gfortran, 2300 numba), then compare.
    assert "2500 ms critical path" in html
    segments = dict(
        re.findall(r'class="seg seg-([a-z_]+)" style="left: [0-9.]+%; width: ([0-9.]+)%"', html)
    )
    assert set(segments) == set(TIMINGS)
    assert float(segments["numba_compile"]) == pytest.approx(60.0)  # 1500 of 2500 ms
    lefts = dict(re.findall(r'class="seg seg-([a-z_]+)" style="left: ([0-9.]+)%', html))
    # Both sides start when generation ends; compare starts when the slower side is done.
    assert float(lefts["gfortran_compile"]) == float(lefts["numba_compile"]) == pytest.approx(6.0)
    assert float(lefts["compare"]) == pytest.approx(98.0)
    assert "numba compile <code>1500 ms</code>" in html


def test_the_ports_sandbox_start_is_drawn_from_the_request_start_beside_the_translator(
    member, tenant_a
):
    # The sandbox took 400 ms to warm up, longer than the 150 ms of translator stages: the numba
    # side starts when it is ready, the gfortran side when generation ends.
    timings = {**TIMINGS, "port_start": 400.0}
    run = _run(
        tenant_a,
        {
            "file": "h.f90",
            "target": "cpu",
            "kernels": [{"name": "heat", "status": "verified", "timings_ms": timings}],
        },
    )
    html = member.get(f"/runs/{run.id}/").content.decode()
    assert "2750 ms critical path" in html  # 400 + 1500 + 800 + 50
    lefts = dict(re.findall(r'class="seg seg-([a-z_]+)" style="left: ([0-9.]+)%', html))
    assert float(lefts["port_start"]) == 0.0
    assert float(lefts["gfortran_compile"]) == pytest.approx(100 * 150 / 2750, abs=0.01)
    assert float(lefts["numba_compile"]) == pytest.approx(100 * 400 / 2750, abs=0.01)
    assert "port start <code>400 ms</code>" in html


def test_cached_run_page_says_nothing_ran_and_links_the_original_proof(member, tenant_a):
    original = _run(
        tenant_a,
        {
            "file": "h.f90",
            "target": "cpu",
            "kernels": [{"name": "heat", "status": "verified", "timings_ms": TIMINGS}],
        },
    )
    served = _run(
        tenant_a,
        {
            "file": "h.f90",
            "target": "cpu",
            "cached": True,
            "original_run_id": str(original.id),
            "kernels": [
                {"name": "heat", "status": "verified", "cached": True, "timings_ms": {"cache": 3.2}}
            ],
        },
    )
    html = member.get(f"/runs/{served.id}/").content.decode()
    assert f'href="/runs/{original.id}/"' in html
    assert "cached · lookup 3 ms" in html
    assert 'class="seg ' not in html

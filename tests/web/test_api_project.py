"""POST /api/v1/translate with ``files`` (a multi-file project), ``include_dirs`` and ``defines``."""

from __future__ import annotations

import json
from pathlib import Path

PROJECTS = Path(__file__).resolve().parents[1] / "fixtures" / "projects"


def _post(client, payload, key):
    return client.post(
        "/api/v1/translate",
        data=json.dumps(payload),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )


def test_files_form_one_project_and_each_kernel_reports_its_file(client_a, tenant_a, make_key):
    key = make_key(tenant_a, scopes=["translate", "history"])
    files = {
        "src/field_kernels.f90": (PROJECTS / "two_file_module" / "field_kernels.f90").read_text(),
        "src/grid_common.f90": (PROJECTS / "two_file_module" / "grid_common.f90").read_text(),
    }
    response = _post(client_a, {"files": files, "verify": False}, key)
    assert response.status_code == 200, response.content
    body = response.json()
    got = {k["name"]: (k["file"], k["status"]) for k in body["kernels"]}
    assert got == {
        "relax_field": ("src/field_kernels.f90", "translated"),
        "fill_boundary": ("src/grid_common.f90", "translated"),
    }
    assert body["run_id"]


def test_include_dirs_and_defines_reach_the_preprocessor(client_a, tenant_a, make_key):
    key = make_key(tenant_a, scopes=["translate", "history"])
    bench = PROJECTS / "bench_include"
    files = {
        "stencil_bench.F90": (bench / "stencil_bench.F90").read_text(),
        "include/bench.h": (bench / "include" / "bench.h").read_text(),
    }
    payload = {
        "files": files,
        "include_dirs": ["include"],
        "defines": {"COEF": "0.5d0"},
        "verify": False,
    }
    response = _post(client_a, payload, key)
    assert response.status_code == 200, response.content
    (k,) = response.json()["kernels"]
    assert k["file"] == "stencil_bench.F90" and k["status"] == "translated"
    assert "0.5" in k["code"]


def test_source_and_files_together_or_neither_is_a_422(client_a, tenant_a, make_key):
    key = make_key(tenant_a, scopes=["translate", "history"])
    assert _post(client_a, {"verify": False}, key).status_code == 422
    both = {"source": "x", "files": {"a.f90": "x"}, "verify": False}
    assert _post(client_a, both, key).status_code == 422

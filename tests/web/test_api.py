"""The /api/v1 edge: Bearer keys bound to the Host's tenant, scopes, isolation, errors as JSON."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

import kernels.engine
from kernels.engine.report import Diagnostic, FortranSyntaxError, KernelResult, TranslationResult
from kernels.selectors import kernel_run_get, kernel_run_list
from kernels.services import kernel_run_record
from tenants import services
from tenants.models import ApiKey

SAXPY = """\
subroutine saxpy(n, a, x, y)
  integer, intent(in) :: n
  real, intent(in) :: a, x(n)
  real, intent(inout) :: y(n)
  integer :: i
  do i = 1, n
    y(i) = a * x(i) + y(i)
  end do
end subroutine saxpy
"""


@pytest.fixture
def fake_engine(monkeypatch):
    """A stand-in for translate_source, so these tests exercise the edge, not the compiler."""
    calls = []

    def translate_source(
        source,
        *,
        filename="input.f90",
        target="cpu",
        kernel=None,
        verify=True,
        sizes=None,
        seed=0,
        progress=None,
        llm_fallback=None,
        time_budget_s=None,
        numba_cache_dir=None,
        **project,
    ):
        calls.append({"target": target, "verify": verify, "sizes": sizes})
        if "syntax error" in source:
            raise FortranSyntaxError("unexpected token", [Diagnostic(3, 7, "unexpected token")])
        return TranslationResult(
            file=filename,
            target=target,
            kernels=[
                KernelResult(
                    name="saxpy",
                    status="verified",
                    device=target,
                    code="def saxpy(n, a, x, y):\n    pass\n",
                    max_abs_err=0.0,
                    max_rel_err=0.0,
                    max_ulp=0.0,
                    parallel_loops=1,
                )
            ],
        )

    monkeypatch.setattr(kernels.engine, "translate_source", translate_source, raising=False)
    return calls


def _get(client, path, key=None, **extra):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    return client.get(path, **headers, **extra)


def _post(client, path, payload, key=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    body = payload if isinstance(payload, str) else json.dumps(payload)
    return client.post(path, data=body, content_type="application/json", **headers)


def test_me_returns_the_hosts_tenant_and_the_keys_scopes(client_a, tenant_a, make_key):
    key = make_key(tenant_a, scopes=["history", "translate"])
    response = _get(client_a, "/api/v1/me", key)
    assert response.status_code == 200
    body = response.json()
    assert body["tenant"]["slug"] == "a"
    assert body["tenant"]["domain"] == "a.localhost"
    assert body["scopes"] == ["history", "translate"]
    assert body["key"]["prefix"] == key[:12]


def test_missing_token_is_401_with_a_bearer_challenge(client_a):
    response = client_a.get("/api/v1/me")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"] == "invalid_token"


def test_key_presented_on_another_tenants_host_is_401(client_b, tenant_a, tenant_b, make_key):
    key = make_key(tenant_a)
    assert _get(client_b, "/api/v1/me", key).status_code == 401


def test_revoked_and_expired_keys_are_401(client_a, tenant_a):
    revoked, raw_revoked = services.api_key_create(tenant=tenant_a, name="r", scopes=None)
    services.api_key_revoke(key=revoked)
    expired, raw_expired = services.api_key_create(tenant=tenant_a, name="e", scopes=None)
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    assert _get(client_a, "/api/v1/me", raw_revoked).status_code == 401
    assert _get(client_a, "/api/v1/me", raw_expired).status_code == 401


def test_malformed_key_is_401_not_500(client_a):
    response = _get(client_a, "/api/v1/me", "not-a-key")
    assert response.status_code == 401
    assert "malformed" in response.json()["message"]


def test_missing_scope_is_403(client_a, tenant_a, make_key, fake_engine):
    key = make_key(tenant_a, scopes=["profile"])
    runs = _get(client_a, "/api/v1/runs", key)
    assert runs.status_code == 403
    assert runs.json() == {
        "error": "insufficient_scope",
        "message": runs.json()["message"],
        "required_scope": "history",
    }
    translate = _post(client_a, "/api/v1/translate", {"source": SAXPY}, key)
    assert translate.status_code == 403
    assert fake_engine == []  # refused before any work was done
    assert client_a.delete("/api/v1/runs", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 403


def test_run_of_tenant_a_is_invisible_from_tenant_b_through_the_api(
    client_a, client_b, tenant_a, tenant_b, make_key
):
    run = kernel_run_record(tenant=tenant_a, channel="cli", status="verified", source=SAXPY)
    key_a = make_key(tenant_a, scopes=["history"])
    key_b = make_key(tenant_b, scopes=["history"])

    listed_a = _get(client_a, "/api/v1/runs", key_a).json()
    listed_b = _get(client_b, "/api/v1/runs", key_b).json()
    assert str(run.id) in [r["id"] for r in listed_a["runs"]]
    assert str(run.id) not in [r["id"] for r in listed_b["runs"]]
    assert _get(client_a, f"/api/v1/runs/{run.id}", key_a).json()["source"] == SAXPY
    assert _get(client_b, f"/api/v1/runs/{run.id}", key_b).status_code == 404


def test_runs_list_pages_with_limit_and_offset(client_a, tenant_a, make_key):
    for i in range(3):
        kernel_run_record(tenant=tenant_a, channel="cli", status="ok", source=f"s{i}")
    key = make_key(tenant_a, scopes=["history"])
    page = _get(client_a, "/api/v1/runs?limit=2&offset=0", key).json()
    rest = _get(client_a, "/api/v1/runs?limit=2&offset=2", key).json()
    assert len(page["runs"]) == 2 and len(rest["runs"]) == page["total"] - 2
    assert _get(client_a, "/api/v1/runs?limit=0", key).status_code == 422
    assert _get(client_a, "/api/v1/runs?limit=abc", key).status_code == 422


def test_unknown_run_id_is_404_json(client_a, tenant_a, make_key):
    key = make_key(tenant_a, scopes=["history"])
    for run_id in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        response = _get(client_a, f"/api/v1/runs/{run_id}", key)
        assert response.status_code == 404 and response.json()["error"] == "not_found"


def test_delete_runs_needs_owner_scope_and_really_deletes(client_a, tenant_a, make_key):
    kernel_run_record(tenant=tenant_a, channel="cli", status="ok", source="gone")
    member = make_key(tenant_a, scopes=["history"])
    owner = make_key(tenant_a, scopes=["history", "owner"])
    assert client_a.delete("/api/v1/runs", HTTP_AUTHORIZATION=f"Bearer {member}").status_code == 403
    response = client_a.delete("/api/v1/runs", HTTP_AUTHORIZATION=f"Bearer {owner}")
    assert response.status_code == 200 and response.json()["deleted"] >= 1
    assert kernel_run_list(tenant=tenant_a) == []


def test_translate_records_an_api_run_and_returns_the_cli_shape(
    client_a, tenant_a, make_key, fake_engine
):
    key = make_key(tenant_a, scopes=["translate"])
    response = _post(
        client_a, "/api/v1/translate", {"source": SAXPY, "target": "cpu", "sizes": {"n": 64}}, key
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) >= {"file", "target", "kernels", "run_id"}
    assert body["kernels"][0]["name"] == "saxpy" and body["kernels"][0]["status"] == "verified"
    run = kernel_run_get(tenant=tenant_a, run_id=body["run_id"])
    assert (run.channel, run.status, run.kernel_names) == ("api", "verified", ["saxpy"])
    assert run.api_key_prefix == key[:12] and run.source == SAXPY
    assert fake_engine == [{"target": "cpu", "verify": True, "sizes": {"n": 64}}]


def test_translate_of_bad_fortran_is_400_with_diagnostics_and_a_failed_run(
    client_a, tenant_a, make_key, fake_engine
):
    key = make_key(tenant_a, scopes=["translate"])
    response = _post(client_a, "/api/v1/translate", {"source": "syntax error here"}, key)
    assert response.status_code == 400
    body = response.json()
    assert body["diagnostics"] == [{"line": 3, "column": 7, "message": "unexpected token"}]
    run = kernel_run_get(tenant=tenant_a, run_id=body["run_id"])
    assert run.status == "failed" and "unexpected token" in run.error


@pytest.mark.parametrize(
    "payload, status",
    [
        ("{not json", 400),
        ({"target": "cpu"}, 422),
        ({"source": SAXPY, "target": "tpu"}, 422),
        ({"source": SAXPY, "sizes": {"n": "big"}}, 422),
        ({"source": SAXPY, "sizes": {"n": -1}}, 422),
        ({"source": "   "}, 422),
    ],
)
def test_bad_translate_input_is_a_client_error_never_500(
    client_a, tenant_a, make_key, fake_engine, payload, status
):
    key = make_key(tenant_a, scopes=["translate"])
    response = _post(client_a, "/api/v1/translate", payload, key)
    assert response.status_code == status, response.content
    assert fake_engine == []


def test_oversized_source_is_413(client_a, tenant_a, make_key, fake_engine, settings):
    settings.FORTRANSPIRE_MAX_SOURCE_BYTES = 1000
    key = make_key(tenant_a, scopes=["translate"])
    response = _post(client_a, "/api/v1/translate", {"source": "!" * 2000}, key)
    assert response.status_code == 413 and fake_engine == []


def test_request_body_over_the_upload_limit_is_413_json(client_a, tenant_a, make_key, fake_engine):
    key = make_key(tenant_a, scopes=["translate"])
    response = _post(client_a, "/api/v1/translate", {"source": "!" * 1_400_000}, key)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large" and fake_engine == []


def test_api_key_env_var_works_over_http_for_the_default_tenant(
    client_a, client_b, tenant_a, tenant_b, settings, monkeypatch
):
    settings.DEFAULT_TENANT_SLUG = "a"
    monkeypatch.setenv("API_KEY", "legacy-env-key")
    assert _get(client_a, "/api/v1/me", "legacy-env-key").json()["tenant"]["slug"] == "a"
    assert _get(client_b, "/api/v1/me", "legacy-env-key").status_code == 401


def test_api_privacy_returns_the_latest_published_notice(client_a, tenant_a):
    services.privacy_notice_publish(body="first words")
    latest = services.privacy_notice_publish(body="second words", data_residency="EU (Paris)")
    body = client_a.get("/api/v1/privacy").json()
    assert body["version"] == latest.version and body["body"] == "second words"
    assert body["data_residency"] == "EU (Paris)"


def test_openapi_docs_are_served(client_a, tenant_a):
    schema = client_a.get("/api/v1/openapi.json")
    assert schema.status_code == 200
    assert "/api/v1/translate" in schema.json()["paths"]
    assert client_a.get("/api/v1/docs").status_code == 200


def _real_engine_missing() -> str | None:
    import shutil

    try:
        from kernels.engine import translate_source  # noqa: F401
        from kernels.engine.profile import profile_source  # noqa: F401
    except ImportError as exc:
        return f"the engine is not importable yet: {exc}"
    if shutil.which("gfortran") is None:
        return "gfortran is not installed"
    return None


@pytest.mark.skipif(_real_engine_missing() is not None, reason=str(_real_engine_missing()))
def test_translate_and_profile_end_to_end_with_the_real_engine(client_a, tenant_a, make_key):
    key = make_key(tenant_a, scopes=["translate", "profile", "history"])
    translated = _post(client_a, "/api/v1/translate", {"source": SAXPY, "sizes": {"n": 50}}, key)
    assert translated.status_code == 200, translated.content[:500]
    kernel = translated.json()["kernels"][0]
    assert (kernel["name"], kernel["status"], kernel["device"]) == ("saxpy", "verified", "cpu")
    assert kernel["max_abs_err"] == 0.0 and "prange" in kernel["code"]

    profiled = _post(client_a, "/api/v1/profile", {"source": SAXPY, "sizes": {"n": 50}}, key)
    assert profiled.status_code == 200, profiled.content[:500]
    assert profiled.json()["kernels"][0]["name"] == "saxpy"

    runs = _get(client_a, "/api/v1/runs", key).json()["runs"]
    ids = {r["id"] for r in runs}
    assert {translated.json()["run_id"], profiled.json()["run_id"]} <= ids
    run = kernel_run_get(tenant=tenant_a, run_id=translated.json()["run_id"])
    assert run.status == "verified" and "prange" in run.generated_code

"""The tenant's JSON API at /api/v1 (OpenAPI at /api/v1/docs). Thin: parse, call a service, shape.

Auth: ``Authorization: Bearer fsp_...`` bound to the Host's tenant, or a dashboard session of a
member. Every ApplicationError becomes ``{"error", "message", ...}`` with its HTTP status.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI, Query, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError
from pydantic import Field, model_validator

from fortranspire_site.errors import (
    ApplicationError,
    AuthenticationFailed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
)
from kernels import inputs, jobs, limits, selectors, services
from tenants.auth import ApiKeyBearer, Caller, TenantSession
from tenants.models import OWNER_SCOPE
from tenants.oauth_api import router as oauth_router
from tenants.selectors import privacy_notice_current

# What every error body looks like (fortranspire_site.errors.ApplicationError.to_dict), and the
# codes any operation may answer with it: auth, scope, validation, size, limits, outages.
ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "machine-readable code, e.g. rate_limited"},
        "message": {"type": "string"},
        "retry_after": {"type": "integer", "description": "429 and 503: seconds to wait"},
        "run_id": {"type": "string", "description": "the run that recorded a failed job"},
        "diagnostics": {"type": "array", "items": {"type": "object"}},
        "line": {"type": "integer"},
        "column": {"type": "integer"},
    },
    "required": ["error", "message"],
    "additionalProperties": True,
}
ERROR_RESPONSES = {
    "400": "invalid input (bad Fortran, NUL characters, sizes out of range), with the position",
    "401": "missing, unknown, expired or revoked API key for this host",
    "403": "the key lacks the scope this operation needs",
    "404": "no such run (or none of this tenant's)",
    "413": "request body or source too large",
    "422": "the body does not match the schema",
    "429": "rate limit, the tenant's job cap or too many wrong keys; see Retry-After",
    "503": "a job did not finish in time, or the database is unavailable; see Retry-After",
}


class FortranspireAPI(NinjaAPI):
    """Documents the error answers of every operation, with their body schema."""

    def get_openapi_schema(self, *args, **kwargs):
        schema = super().get_openapi_schema(*args, **kwargs)
        schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
        reference = {"$ref": "#/components/schemas/Error"}
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                responses = operation.setdefault("responses", {})
                for code, description in ERROR_RESPONSES.items():
                    responses.setdefault(
                        code,
                        {
                            "description": description,
                            "content": {"application/json": {"schema": reference}},
                        },
                    )
        return schema


api = FortranspireAPI(
    title="fortranspire",
    version="1",
    description="Port Fortran kernels to numba CPU / numba.cuda GPU code, verified against gfortran.",
    auth=[ApiKeyBearer(), TenantSession()],
    urls_namespace="api-v1",
)


def _error(request: HttpRequest, status: int, payload: dict) -> HttpResponse:
    response = api.create_response(request, payload, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="fortranspire"'
    return response


@api.exception_handler(ApplicationError)
def on_application_error(request: HttpRequest, exc: ApplicationError) -> HttpResponse:
    response = _error(request, exc.status, exc.to_dict())
    if isinstance(exc, RateLimited):
        response["Retry-After"] = str(exc.retry_after)
    return response


@api.exception_handler(AuthenticationError)
def on_missing_auth(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return _error(
        request, 401, AuthenticationFailed("missing or unsupported credentials").to_dict()
    )


@api.exception_handler(ValidationError)
def on_invalid_input(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    if any(e.get("type") == "string_unicode" for e in exc.errors):
        # A lone surrogate in a JSON string: say where it is, as for a NUL character.
        located = _text_position_error(request)
        if located is not None:
            return on_application_error(request, located)
    return _error(
        request, 422, {"error": "invalid_request", "message": "invalid input", "detail": exc.errors}
    )


def _text_position_error(request: HttpRequest) -> ApplicationError | None:
    import json

    try:
        body = json.loads(request.body)
    except (ValueError, RequestDataTooBig):
        return None
    for name, value in body.items() if isinstance(body, dict) else ():
        if isinstance(value, str):
            try:
                inputs.source_check(value, max_bytes=MAX_SOURCE_CHARS * 4, field=name)
            except ApplicationError as error:
                return error
    return None


@api.exception_handler(RequestDataTooBig)
def on_body_too_large(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return _error(
        request, 413, PayloadTooLarge(f"request body is larger than {limit} bytes").to_dict()
    )


@api.exception_handler(HttpError)
def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return _error(request, exc.status_code, {"error": "bad_request", "message": str(exc)})


def _caller(request: HttpRequest, scope: str | None = None) -> Caller:
    caller: Caller = request.auth  # type: ignore[attr-defined]
    # First, so that refused calls count against the key too.
    limits.rate_limit_check(key=rate_key(caller))
    if scope is not None:
        caller.require(scope)
    return caller


def rate_key(caller: Caller) -> str:
    if caller.api_key is not None:
        return f"key:{caller.api_key.pk}"
    return f"user:{caller.tenant.schema_name}:{caller.user.pk if caller.user else 0}"


async def _job_result(caller: Caller, run) -> dict[str, Any]:
    """Wait for the job's final state (the request's thread is not held meanwhile)."""
    if not run.finished:
        run = await jobs.job_wait(tenant=caller.tenant, run_id=str(run.id))
    return jobs.job_outcome(run)


MAX_SOURCE_CHARS = 1_048_576

# ---- schemas --------------------------------------------------------------------------------


# The same bounds kernels.inputs checks, stated in the schema so that clients (and the OpenAPI
# document) know them: no NUL character, a non-blank source, sizes 1..2**24, seed 0..2**32-1.
SourceText = Annotated[
    str,
    Field(
        description="Fortran source (free form), at most 1 MB, no NUL or lone surrogates",
        min_length=1,
        max_length=MAX_SOURCE_CHARS,
        pattern=r"\S",  # not blank; NUL characters are refused with their position (400)
    ),
]
SizeName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]
SizeValue = Annotated[int, Field(ge=1, le=inputs.MAX_SIZE_VALUE)]
Sizes = Annotated[
    dict[SizeName, SizeValue] | None,
    Field(None, description='array extents, e.g. {"n": 64}', max_length=inputs.MAX_SIZES),
]


class TranslateIn(Schema):
    source: SourceText | None = None
    files: dict[str, str] | None = Field(
        None,
        description="instead of source, a project of several files {name: text}: modules are "
        "visible across files; each kernel reports its file",
    )
    include_dirs: list[str] = Field(
        default_factory=list, description="directories among the file names searched by #include"
    )
    defines: dict[str, str | None] = Field(
        default_factory=dict, description='preprocessor macros, e.g. {"N": "64", "USE_X": null}'
    )
    target: Literal["cpu", "gpu"] = "cpu"
    kernel: str | None = Field(None, description="translate only this subroutine", max_length=63)
    verify: bool = True
    sizes: Sizes = None
    seed: int = Field(0, ge=0, le=2**32 - 1)
    allow_llm: bool = False

    @model_validator(mode="after")
    def _source_or_files(self) -> TranslateIn:
        if (self.source is None) == (self.files is None):
            raise ValueError("give either source or files")
        return self


class ProfileIn(Schema):
    source: SourceText
    sizes: Sizes = None
    measure: bool = False


# ---- endpoints ------------------------------------------------------------------------------


@api.get("/me", tags=["account"])
def me(request: HttpRequest) -> dict[str, Any]:
    caller = _caller(request)
    tenant = caller.tenant
    key = caller.api_key
    return {
        "tenant": {
            "slug": tenant.schema_name,
            "name": tenant.name,
            "domain": getattr(tenant, "domain_url", ""),
            "retention_days": tenant.retention_days,
        },
        "scopes": sorted(caller.scopes),
        "key": None
        if key is None
        else {
            "prefix": key.prefix,
            "name": key.name,
            "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        },
        "user": None if caller.user is None else caller.user.get_username(),
    }


@api.get("/privacy", auth=None, tags=["account"])
def privacy(request: HttpRequest) -> dict[str, Any]:
    notice = privacy_notice_current(tenant=getattr(request, "tenant", None))
    if notice is None:
        raise NotFound("no privacy notice has been published yet")
    return {
        "version": notice.version,
        "published_at": notice.published_at.isoformat(),
        "body": notice.body,
        "sub_processors": notice.sub_processors,
        "data_residency": notice.data_residency,
        "retention_policy": notice.retention_policy,
        "tenant_retention_days": getattr(getattr(request, "tenant", None), "retention_days", None),
    }


@api.get("/runs", tags=["history"])
def runs_list(
    request: HttpRequest,
    limit: int = Query(20, ge=1, le=selectors.MAX_LIMIT),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    caller = _caller(request, "history")
    runs = selectors.kernel_run_list(tenant=caller.tenant, limit=limit, offset=offset)
    return {
        "runs": [r.to_dict() for r in runs],
        "limit": limit,
        "offset": offset,
        "total": selectors.kernel_run_count(tenant=caller.tenant),
    }


@api.get("/runs/{run_id}", tags=["history"])
def runs_get(request: HttpRequest, run_id: str) -> dict[str, Any]:
    caller = _caller(request, "history")
    run = selectors.kernel_run_get(tenant=caller.tenant, run_id=run_id)
    return run.to_dict(include_source=True, include_report=True)


@api.delete("/runs", tags=["history"])
def runs_delete_all(request: HttpRequest) -> dict[str, Any]:
    caller = _caller(request, OWNER_SCOPE)
    deleted = services.kernel_run_delete_all(
        tenant=caller.tenant, actor=caller.user or caller.api_key
    )
    return {"deleted": deleted}


@api.post("/translate", tags=["kernels"])
async def translate(request: HttpRequest, payload: TranslateIn) -> dict[str, Any]:
    def submit():
        caller = _caller(request, "translate")
        run = jobs.job_translate_submit(
            tenant=caller.tenant,
            source=payload.source or "",
            files=payload.files,
            include_dirs=payload.include_dirs,
            defines=payload.defines,
            channel="api",
            tool="translate_kernel_gpu" if payload.target == "gpu" else "translate_kernel",
            target=payload.target,
            kernel=payload.kernel,
            verify=payload.verify,
            sizes=payload.sizes,
            seed=payload.seed,
            allow_llm=payload.allow_llm,
            api_key=caller.api_key,
            user=caller.user,
        )
        return caller, run

    # Submitting is quick (checks + one insert); the wait below holds no thread.
    caller, run = await sync_to_async(submit)()
    return await _job_result(caller, run)


@api.post("/profile", tags=["kernels"])
async def profile(request: HttpRequest, payload: ProfileIn) -> dict[str, Any]:
    def submit():
        caller = _caller(request, "profile")
        run = jobs.job_profile_submit(
            tenant=caller.tenant,
            source=payload.source,
            channel="api",
            tool="profile_kernels",
            sizes=payload.sizes,
            measure=payload.measure,
            api_key=caller.api_key,
            user=caller.user,
        )
        return caller, run

    caller, run = await sync_to_async(submit)()
    return await _job_result(caller, run)


def _mount_optional_routers() -> None:
    try:
        from kernels.api_llm import router as llm_router
    except ImportError:  # the LLM helper's router is optional
        return
    api.add_router("/llm", llm_router)


_mount_optional_routers()
api.add_router("/oauth", oauth_router)

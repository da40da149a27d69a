"""ninja router for the tenant's LLM credential and LLM usage (mounted at /api/v1/llm).

Thin: parse, call tenants.llm_credentials / kernels.llm_usage, shape. The key goes in with PUT
and never comes back out: GET says only whether one is stored and where it comes from.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Schema
from pydantic import Field

from kernels.llm_usage import MAX_DAYS, llm_usage_summary
from tenants.auth import Caller
from tenants.llm_credentials import (
    llm_credential_delete,
    llm_credential_set,
    llm_credential_status,
)
from tenants.models import OWNER_SCOPE

router = Router(tags=["llm"])


class CredentialIn(Schema):
    api_key: str | None = Field(
        None, description="The tenant's Mistral API key; stored encrypted, never shown again."
    )
    model: str | None = Field(None, description="Mistral model, default codestral-latest")
    endpoint: str | None = Field(
        None, description="Optional endpoint override (a Mistral-compatible server); '' clears it"
    )
    fallback_enabled: bool | None = Field(
        None, description="Let translations with allow_llm use the LLM fallback"
    )
    use_platform_key: bool | None = Field(
        None, description="Drop the tenant's key and use the platform's MISTRAL_API_KEY"
    )


def _caller(request: HttpRequest, scope: str) -> Caller:
    caller: Caller = request.auth  # type: ignore[attr-defined]
    caller.require(scope)
    return caller


@router.get("/credential")
def credential_get(request: HttpRequest) -> dict[str, Any]:
    caller = _caller(request, OWNER_SCOPE)
    return llm_credential_status(tenant=caller.tenant).to_dict()


@router.put("/credential")
def credential_put(request: HttpRequest, payload: CredentialIn) -> dict[str, Any]:
    caller = _caller(request, OWNER_SCOPE)
    llm_credential_set(
        tenant=caller.tenant,
        api_key=payload.api_key,
        model=payload.model,
        endpoint=payload.endpoint,
        fallback_enabled=payload.fallback_enabled,
        use_platform_key=payload.use_platform_key,
        actor=caller.user or caller.api_key,
    )
    return llm_credential_status(tenant=caller.tenant).to_dict()


@router.delete("/credential")
def credential_delete(request: HttpRequest) -> dict[str, Any]:
    caller = _caller(request, OWNER_SCOPE)
    deleted = llm_credential_delete(tenant=caller.tenant, actor=caller.user or caller.api_key)
    return {"deleted": deleted}


@router.get("/usage")
def usage(
    request: HttpRequest, days: int | None = Query(None, ge=1, le=MAX_DAYS)
) -> dict[str, Any]:
    caller = _caller(request, "history")
    return llm_usage_summary(tenant=caller.tenant, days=days).to_dict()

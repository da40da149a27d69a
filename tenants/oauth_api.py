"""/api/v1/oauth/...: an owner lists the OAuth clients connected to the organisation and revokes
one. Thin: tenants.oauth_services does the work."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router

from tenants.auth import Caller
from tenants.models import OWNER_SCOPE
from tenants.oauth_services import oauth_client_list, oauth_client_revoke

router = Router(tags=["oauth"])


def _owner(request: HttpRequest) -> Caller:
    caller: Caller = request.auth  # type: ignore[attr-defined]
    caller.require(OWNER_SCOPE)
    return caller


@router.get("/clients")
def clients_list(request: HttpRequest) -> dict[str, Any]:
    """OAuth clients holding a live token or code for this organisation (owner only)."""
    caller = _owner(request)
    return {"clients": oauth_client_list(tenant=caller.tenant)}


@router.delete("/clients/{path:client_id}")
def clients_revoke(request: HttpRequest, client_id: str) -> dict[str, Any]:
    """Revoke every token and code the client holds for this organisation (owner only)."""
    caller = _owner(request)
    actor = caller.user if caller.user is not None else caller.api_key
    counts = oauth_client_revoke(tenant=caller.tenant, client_id=client_id, actor=actor)
    return {"client_id": client_id, "revoked": counts}

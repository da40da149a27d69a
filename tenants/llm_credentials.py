"""A tenant's Mistral credential: set, read back (never the key), decrypt, resolve.

The key is encrypted at rest with Fernet under a key derived (HKDF-SHA256) from
``settings.SECRET_KEY``; ``SECRET_KEY_FALLBACKS`` still decrypt, so rotating the secret does not
lose stored keys. The raw key is never returned by anything but :func:`llm_credential_decrypt`,
and that is only called to build the client for an outgoing request.

Which key a request uses (:func:`llm_config_for`):
- the tenant's own key when one is stored;
- else the platform-wide ``MISTRAL_API_KEY``, but only for a tenant that opted in (a credential
  row saved with ``use_platform_key``). A tenant with no row never uses anyone's key;
- the platform key is only ever sent to Mistral itself, never to a tenant's endpoint override,
  so a tenant cannot make us hand our key to a server it controls.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlparse

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django_tenants.utils import get_public_schema_name, schema_context

from fortranspire_site.errors import ApplicationError, ValidationFailed
from kernels.engine.egress import EndpointRefused, resolve_checked
from kernels.engine.llm import DEFAULT_MODEL, LlmConfig
from tenants.models import ApiKey, LlmCredential, Tenant

MAX_KEY_LEN = 400
MAX_MODEL_LEN = 100
MAX_ENDPOINT_LEN = 300
PURPOSES = ("agent", "fallback")

HOW_TO_CONFIGURE = (
    "Configure a Mistral key for this tenant: PUT /api/v1/llm/credential with "
    '{"api_key": "...", "fallback_enabled": true} (owner scope), or in the admin under '
    '"LLM credentials"; or, where the operator set MISTRAL_API_KEY, opt in with '
    '{"use_platform_key": true}.'
)


class LlmNotConfigured(ApplicationError):
    """The tenant has no usable Mistral key (or turned the fallback off)."""

    status = 400
    code = "llm_not_configured"


class LlmCredentialUnreadable(ApplicationError):
    """The stored key no longer decrypts: SECRET_KEY changed without a fallback."""

    status = 409
    code = "llm_credential_unreadable"


# --------------------------------------------------------------------------------------------
# Encryption


def _derive_fernet(secret: str) -> Fernet:
    # A separate derived key, so the Fernet key is not SECRET_KEY itself and cannot be mixed up
    # with Django's own signing uses of it.
    raw = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"fortranspire",
        info=b"fortranspire llm-credential v1",
    ).derive(secret.encode("utf-8"))
    return Fernet(base64.urlsafe_b64encode(raw))


@lru_cache(maxsize=8)
def _fernet_for(secrets: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([_derive_fernet(s) for s in secrets])


def _fernet() -> MultiFernet:
    secrets = (settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", []))
    return _fernet_for(tuple(secrets))


def encrypt_api_key(raw_key: str) -> str:
    return _fernet().encrypt(raw_key.encode("utf-8")).decode("ascii")


def decrypt_api_key(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError) as exc:
        raise LlmCredentialUnreadable(
            "the stored Mistral key cannot be decrypted (the server secret changed); "
            "set it again with PUT /api/v1/llm/credential"
        ) from exc


# --------------------------------------------------------------------------------------------
# Validation


def _validate_api_key(api_key: Any) -> str:
    if not isinstance(api_key, str):
        raise ValidationFailed("api_key must be a string")
    api_key = api_key.strip()
    if not api_key:
        raise ValidationFailed("api_key must not be empty (use use_platform_key to clear it)")
    if len(api_key) > MAX_KEY_LEN or any(c.isspace() or not c.isprintable() for c in api_key):
        raise ValidationFailed("api_key is not a valid API key")
    return api_key


def _validate_model(model: Any) -> str:
    if not isinstance(model, str) or not model.strip():
        raise ValidationFailed("model must be a non-empty string")
    model = model.strip()
    if len(model) > MAX_MODEL_LEN or any(c.isspace() for c in model):
        raise ValidationFailed("model is not a valid model name")
    return model


def _validate_endpoint(endpoint: Any) -> str:
    if endpoint is None:
        return ""
    if not isinstance(endpoint, str):
        raise ValidationFailed("endpoint must be a URL string")
    endpoint = endpoint.strip().rstrip("/")
    if not endpoint:
        return ""
    if len(endpoint) > MAX_ENDPOINT_LEN:
        raise ValidationFailed("endpoint is too long")
    parsed = urlparse(endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValidationFailed("endpoint must be an http(s) URL, e.g. https://llm.example.com")
    if parsed.username or parsed.password or parsed.query or parsed.fragment:
        raise ValidationFailed("endpoint must not carry credentials, a query or a fragment")
    if not _private_endpoints_allowed():
        # The server makes the request: an endpoint on loopback or a private network would let a
        # tenant probe our internal services (SSRF). What the name resolves to is checked here
        # for a clear answer now, and again at every connection (kernels.engine.egress pins
        # the checked address). Operators running a self-hosted model on their own network
        # turn this on explicitly.
        try:
            resolve_checked(parsed.hostname, parsed.port or 443, allow_private=False)
        except EndpointRefused as exc:
            if "does not resolve" not in str(exc):
                raise ValidationFailed(str(exc)) from None
            # A name that does not resolve yet is kept: it is checked again at connect time.
        except ValueError:  # a port out of range
            raise ValidationFailed("endpoint has an invalid port") from None
        if parsed.scheme != "https":
            raise ValidationFailed("endpoint must use https")
    return endpoint


def _private_endpoints_allowed() -> bool:
    return _setting_bool("FORTRANSPIRE_LLM_ALLOW_PRIVATE_ENDPOINTS")


def _setting(name: str) -> str:
    """A Django setting, else the environment variable of the same name (operators set either)."""
    value = getattr(settings, name, None)
    if value is None:
        value = os.environ.get(name)
    return "" if value is None else str(value).strip()


def _setting_bool(name: str) -> bool:
    value = getattr(settings, name, None)
    if isinstance(value, bool):
        return value
    return _setting(name).lower() in ("1", "true", "yes", "on")


def _platform_api_key() -> str:
    return _setting("MISTRAL_API_KEY")


# --------------------------------------------------------------------------------------------
# Services


def llm_credential_set(
    *,
    tenant: Tenant,
    api_key: str | None = None,
    model: str | None = None,
    endpoint: str | None = None,
    fallback_enabled: bool | None = None,
    use_platform_key: bool | None = None,
    actor: AbstractBaseUser | ApiKey | str | None = None,
) -> LlmCredential:
    """Create or update the tenant's credential. ``None`` leaves a field as it is.

    ``use_platform_key=True`` drops the tenant's own key and opts in to the platform default.
    """
    from tenants.services import audit

    if tenant is None or not tenant.pk or tenant.schema_name == get_public_schema_name():
        raise ValidationFailed("an LLM credential belongs to a tenant")
    if api_key is not None and use_platform_key:
        raise ValidationFailed("give either api_key or use_platform_key, not both")
    if fallback_enabled is not None and not isinstance(fallback_enabled, bool):
        raise ValidationFailed("fallback_enabled must be true or false")
    raw = _validate_api_key(api_key) if api_key is not None else None
    model = _validate_model(model) if model is not None else None
    endpoint = _validate_endpoint(endpoint) if endpoint is not None else None

    with schema_context(get_public_schema_name()), transaction.atomic():
        credential, created = LlmCredential.objects.select_for_update().get_or_create(
            tenant=tenant, defaults={"model": DEFAULT_MODEL}
        )
        if created and raw is None and not use_platform_key:
            # A row without a key means "use the platform key": that must be asked for, not
            # implied by a first PUT that only sets the model.
            raise ValidationFailed(
                "a new LLM credential needs an api_key, or use_platform_key: true"
            )
        changed = []
        if raw is not None:
            credential.encrypted_api_key = encrypt_api_key(raw)
            changed.append("api_key")
        elif use_platform_key:
            credential.encrypted_api_key = ""
            changed.append("use_platform_key")
        if model is not None:
            credential.model = model
            changed.append("model")
        if endpoint is not None:
            credential.endpoint_override = endpoint
            changed.append("endpoint")
        if fallback_enabled is not None:
            credential.fallback_enabled = fallback_enabled
            changed.append("fallback_enabled")
        credential.save()
        # The audit row says what changed, never the key.
        audit(
            action="llm_credential.set",
            target=tenant.schema_name,
            tenant=tenant,
            actor=actor,
            details={
                "created": created,
                "changed": changed,
                "model": credential.model,
                "endpoint": credential.endpoint_override,
                "fallback_enabled": credential.fallback_enabled,
            },
        )
    return credential


def llm_credential_delete(
    *, tenant: Tenant, actor: AbstractBaseUser | ApiKey | str | None = None
) -> bool:
    from tenants.services import audit

    with schema_context(get_public_schema_name()), transaction.atomic():
        deleted, _ = LlmCredential.objects.filter(tenant=tenant).delete()
        if deleted:
            audit(
                action="llm_credential.delete",
                target=tenant.schema_name,
                tenant=tenant,
                actor=actor,
            )
    return bool(deleted)


def llm_credential_get(*, tenant: Tenant) -> LlmCredential | None:
    with schema_context(get_public_schema_name()):
        return LlmCredential.objects.filter(tenant=tenant).first()


def llm_credential_decrypt(*, credential: LlmCredential) -> str:
    """The raw key; only for building the outgoing client. Empty when the row holds no key."""
    if not credential.encrypted_api_key:
        return ""
    return decrypt_api_key(credential.encrypted_api_key)


@dataclass(frozen=True)
class LlmCredentialStatus:
    """What the API and the admin may show: never the key, only whether one is there."""

    configured: bool
    key_source: str  # 'tenant' | 'platform' | 'none'
    model: str
    endpoint: str
    fallback_enabled: bool
    platform_key_available: bool
    updated_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "configured": self.configured,
            "key_source": self.key_source,
            "has_api_key": self.key_source == "tenant",
            "model": self.model,
            "endpoint": self.endpoint,
            "fallback_enabled": self.fallback_enabled,
            "platform_key_available": self.platform_key_available,
            "updated_at": self.updated_at,
        }


def llm_credential_status(*, tenant: Tenant) -> LlmCredentialStatus:
    credential = llm_credential_get(tenant=tenant)
    platform = bool(_platform_api_key())
    if credential is None:
        return LlmCredentialStatus(False, "none", DEFAULT_MODEL, "", False, platform, None)
    if credential.encrypted_api_key:
        source = "tenant"
    elif platform:
        source = "platform"
    else:
        source = "none"
    return LlmCredentialStatus(
        configured=source != "none",
        key_source=source,
        model=credential.model,
        endpoint=credential.endpoint_override,
        fallback_enabled=credential.fallback_enabled,
        platform_key_available=platform,
        updated_at=credential.updated_at.isoformat() if credential.updated_at else None,
    )


def llm_config_for(*, tenant: Tenant, purpose: str = "agent") -> LlmConfig | None:
    """The client configuration a request for ``tenant`` uses, or None when there is none.

    ``purpose='fallback'`` also needs the tenant's fallback switch on. Nothing here ever falls
    back to another tenant's credential: the lookup is by this tenant's primary key only.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}")
    if tenant is None or not tenant.pk:
        return None
    credential = llm_credential_get(tenant=tenant)
    if credential is None:
        return None
    if purpose == "fallback" and not credential.fallback_enabled:
        return None
    timeout_s = float(_setting("FORTRANSPIRE_LLM_TIMEOUT_S") or 120)
    own_key = llm_credential_decrypt(credential=credential)
    if own_key:
        return LlmConfig(
            api_key=own_key,
            model=credential.model or DEFAULT_MODEL,
            server_url=credential.endpoint_override or None,
            timeout_s=timeout_s,
            allow_private_endpoint=_private_endpoints_allowed(),
        )
    platform = _platform_api_key()
    if not platform:
        return None
    return LlmConfig(
        api_key=platform,
        model=credential.model or DEFAULT_MODEL,
        server_url=_setting("MISTRAL_SERVER_URL") or None,
        timeout_s=timeout_s,
        # The platform's own endpoint is the operator's choice, not a tenant's.
        allow_private_endpoint=True,
    )


def llm_config_required(*, tenant: Tenant, purpose: str = "agent") -> LlmConfig:
    config = llm_config_for(tenant=tenant, purpose=purpose)
    if config is None:
        raise LlmNotConfigured(
            f"No Mistral credential is configured for tenant {tenant.schema_name!r}. "
            + HOW_TO_CONFIGURE
        )
    return config

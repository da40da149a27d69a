"""MCP-only settings (how long host and key lookups are kept, the request body cap).

MCP_AUTH_CACHE_S is also the revocation bound (mcp_bridge.auth, docs/mcp-endpoint.md).

The rate limit, the tenant's job cap and the source checks are the site's, in kernels.limits
and kernels.inputs, so MCP, REST and the dashboard apply the same ones.
"""

from __future__ import annotations

import os

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

DEFAULTS: dict[str, float] = {
    "MCP_MAX_SOURCE_BYTES": 1_000_000,
    "MCP_TENANT_HOSTS_TTL_S": 30,
    "MCP_AUTH_CACHE_S": 1,
}


# Settings shared with the rest of the site that stand in when no MCP-specific one is set.
ALIASES = {"MCP_MAX_SOURCE_BYTES": "FORTRANSPIRE_MAX_SOURCE_BYTES"}


def limit_setting(name: str) -> float:
    """Django setting NAME (or its site-wide alias), else env FORTRANSPIRE_NAME, else the default.

    Kept once read: every MCP request reads two of these, and a read through Django's lazy
    settings and the environment cost as much as the rest of a kept tools/list answer. Any
    change of a Django setting (``override_settings`` and pytest-django's ``settings`` fixture
    send ``setting_changed``) forgets them, so tests can still change a limit on the fly;
    operators set them before start-up.
    """
    value = _read.get(name)
    if value is None:
        value = _read[name] = _setting(name)
    return value


_read: dict[str, float] = {}
setting_changed.connect(lambda **_: _read.clear(), weak=False, dispatch_uid="mcp_limits_forget")


def _setting(name: str) -> float:
    try:
        value = getattr(settings, name, None)
        if value is None and name in ALIASES:
            value = getattr(settings, ALIASES[name], None)
    except ImproperlyConfigured:  # settings not configured (engine-only use)
        value = None
    if value is None:
        value = os.environ.get(f"FORTRANSPIRE_{name}")
    if value is None:
        value = DEFAULTS[name]
    return float(value)

"""Django settings for fortranspire (multi-tenant: one PostgreSQL schema per tenant).

Everything that differs between a laptop and production comes from the environment:
DATABASE_URL (else embedded pgserver), REDIS_URL (else in-memory channel layer and in-process
jobs), SECRET_KEY (else generated once and kept under $FORTRANSPIRE_HOME), DEBUG,
FORTRANSPIRE_ALLOWED_HOSTS, API_KEY (legacy single key for the default tenant).
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from pathlib import Path

from fortranspire_site import db

BASE_DIR = Path(__file__).resolve().parent.parent

# Under pytest the embedded database and the generated secret live apart from ./.fortranspire,
# so a test run never touches (or is broken by) the data of a `make run` server.
TESTING = "pytest" in sys.modules or os.environ.get("FORTRANSPIRE_TESTING") == "1"
if TESTING:
    os.environ["FORTRANSPIRE_HOME"] = os.environ.get("FORTRANSPIRE_TEST_HOME") or str(
        Path(tempfile.gettempdir()) / f"fortranspire-test-{os.getuid()}"
    )
FORTRANSPIRE_HOME = db.fortranspire_home()


def _env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _persistent_secret_key(home: Path) -> str:
    """SECRET_KEY from the environment, else one generated on first use and kept (0600).

    Never a hard-coded key: sessions, CSRF tokens and the Fernet key for stored LLM credentials
    derive from it, so a key shipped in the source would unlock every installation.
    """
    from_env = os.environ.get("SECRET_KEY") or os.environ.get("DJANGO_SECRET_KEY")
    if from_env:
        return from_env
    path = home / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    home.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    try:
        # O_EXCL: two processes starting at once must end up with the same key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


SECRET_KEY = _persistent_secret_key(FORTRANSPIRE_HOME)
# Rotation: the previous key(s) stay valid for sessions and for decrypting stored Mistral keys
# until they are re-saved (docs/on-call.md).
SECRET_KEY_FALLBACKS = [
    k.strip() for k in os.environ.get("SECRET_KEY_FALLBACKS", "").split(",") if k.strip()
]
DEBUG = _env_bool("DEBUG", False)

# Tenants live on subdomains of localhost in development; production domains are added through
# FORTRANSPIRE_ALLOWED_HOSTS (comma separated; a leading dot matches subdomains).
ALLOWED_HOSTS = [".localhost", "localhost", "127.0.0.1", "[::1]", "testserver"] + [
    h.strip() for h in os.environ.get("FORTRANSPIRE_ALLOWED_HOSTS", "").split(",") if h.strip()
]
# Hosts that show the public site (landing page + operator admin) rather than a tenant.
PUBLIC_HOSTS = ["localhost", "127.0.0.1", "[::1]", "testserver"] + [
    h.strip() for h in os.environ.get("FORTRANSPIRE_PUBLIC_HOSTS", "").split(",") if h.strip()
]
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]

SHARED_APPS = [
    "django_tenants",
    "tenants",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "django.contrib.staticfiles",
    "channels",
    "ninja",
    "axes",
    # OAuth 2.1 for MCP clients. Its tables live in the public schema: accounts are public, one
    # client (a Client ID Metadata Document URL) may connect to several tenants, and each token
    # is bound to one tenant by its RFC 8707 resource (see tenants/oauth_views.py).
    "oauth2_provider",
]
TENANT_APPS = [
    "django.contrib.contenttypes",
    "kernels",
]
INSTALLED_APPS = list(SHARED_APPS) + [app for app in TENANT_APPS if app not in SHARED_APPS]

TENANT_MODEL = "tenants.Tenant"
TENANT_DOMAIN_MODEL = "tenants.Domain"
PUBLIC_SCHEMA_NAME = "public"
PUBLIC_SCHEMA_URLCONF = "fortranspire_site.urls_public"
ROOT_URLCONF = "fortranspire_site.urls"
DEFAULT_TENANT_SLUG = os.environ.get("DEFAULT_TENANT_SLUG", "demo")
RESERVED_TENANT_SLUGS = {"public", "www", "admin", "api", "mcp", "static", "information_schema"}
# Self-service sign-up on the public host (FORTRANSPIRE_SIGNUP=0 turns it off): a new workspace
# gets the host <slug>.<FORTRANSPIRE_TENANT_DOMAIN_SUFFIX>. Names that would read as our own
# services or mail hosts are refused as subdomains.
SIGNUP_ENABLED = os.environ.get("FORTRANSPIRE_SIGNUP", "1").strip().lower() not in (
    "0",
    "false",
    "no",
    "off",
)
TENANT_DOMAIN_SUFFIX = os.environ.get("FORTRANSPIRE_TENANT_DOMAIN_SUFFIX", "localhost").strip(".")
SIGNUP_RESERVED_SLUGS = {
    "app",
    "auth",
    "login",
    "logout",
    "signup",
    "oauth",
    "sso",
    "mail",
    "smtp",
    "imap",
    "ftp",
    "ns1",
    "ns2",
    "dashboard",
    "status",
    "docs",
    "help",
    "support",
    "billing",
    "root",
    "system",
    "demo",
    "test",
    "localhost",
    "fortranspire",
}
# Sign-ups accepted per client address per hour (the throttle uses the cache: Redis when set).
SIGNUP_PER_HOUR = int(os.environ.get("FORTRANSPIRE_SIGNUP_PER_HOUR", 5))

MIDDLEWARE = [
    "tenants.middleware.TenantHostMiddleware",
    "fortranspire_site.middleware.DatabaseUnavailableMiddleware",
    "fortranspire_site.middleware.ContentSecurityPolicyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: locked-out logins are answered 429.
    "axes.middleware.AxesMiddleware",
]

# Brute force (django-axes): 10 failed logins (dashboard, admin) or API keys from one address
# for one username lock that pair out for 15 minutes; the attempts live in the database, so
# every process sees them.
AUTHENTICATION_BACKENDS = [
    "tenants.auth.LoginThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = int(os.environ.get("FORTRANSPIRE_LOGIN_FAILURE_LIMIT", 10))
AXES_COOLOFF_TIME = 0.25  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "fortranspire_site.wsgi.application"
ASGI_APPLICATION = "fortranspire_site.asgi.application"

DATABASES = {"default": db.database_settings()}
DATABASE_ROUTERS = ("django_tenants.routers.TenantSyncRouter",)
# Starts the embedded server on the first connection (see fortranspire_site/pgembedded).
ORIGINAL_BACKEND = "fortranspire_site.pgembedded"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL") or None
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Jobs (kernels.jobs): without REDIS_URL a pool of threads in each web process runs them; with
# it, Celery workers over Redis do (queues cpu and gpu).
FORTRANSPIRE_JOB_WORKERS = int(os.environ.get("FORTRANSPIRE_JOB_WORKERS", 2))
# A translation's own budget (the engine's FORTRANSPIRE_MAX_RUN_S) plus queueing time.
FORTRANSPIRE_JOB_WAIT_S = float(os.environ.get("FORTRANSPIRE_JOB_WAIT_S", 900))
# Limits (kernels.limits), shared by REST, MCP and the dashboard.
FORTRANSPIRE_RATE_LIMIT_PER_MINUTE = float(os.environ.get("FORTRANSPIRE_RATE_LIMIT_PER_MINUTE", 60))
FORTRANSPIRE_RATE_LIMIT_BURST = float(os.environ.get("FORTRANSPIRE_RATE_LIMIT_BURST", 20))
FORTRANSPIRE_TENANT_MAX_CONCURRENT_JOBS = int(
    os.environ.get("FORTRANSPIRE_TENANT_MAX_CONCURRENT_JOBS", 4)
)
# Celery: the broker is Redis when REDIS_URL is set; otherwise tasks run in-process (eager).
# Throttles (sign-up) count in the cache: shared by every process when Redis is there.
if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = REDIS_URL or "cache+memory://"
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_DEFAULT_QUEUE = "cpu"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A job whose worker died unacknowledged is delivered again after this many seconds.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": int(os.environ.get("FORTRANSPIRE_JOB_REDELIVER_S", 960))
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/login/"

# django-oauth-toolkit: OAuth 2.1 authorization server on every tenant host (issuer = the
# tenant's origin). Public clients register themselves (RFC 7591) or present a Client ID Metadata
# Document URL; PKCE S256 only; access and refresh tokens stored as SHA-256 checksums only.
OAUTH_SCOPE_DESCRIPTIONS = {
    "translate": "Port Fortran kernels to numba CPU/GPU code and verify them (translate tools)",
    "profile": "Rank the kernels of a Fortran file by estimated cost (profile_kernels)",
    "agent": "Ask the porting agent, which may call the organisation's LLM (ask_agent)",
    "history": "Read this organisation's earlier kernel runs (list_kernel_runs, get_kernel_run)",
}
OAUTH2_PROVIDER = {
    "SCOPES": OAUTH_SCOPE_DESCRIPTIONS,
    "DEFAULT_SCOPES": list(OAUTH_SCOPE_DESCRIPTIONS),
    "PKCE_REQUIRED": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_PKCE_REQUIRED": True,
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    # RFC 9207 `iss` on the authorization response; equals the metadata issuer (the origin).
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "COMPLIANT_BCP_RFC9700_REFRESH_TOKEN": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_MATCHING": True,
    "ACCESS_TOKEN_EXPIRE_SECONDS": int(os.environ.get("OAUTH_ACCESS_TOKEN_EXPIRE_SECONDS", 3600)),
    "REFRESH_TOKEN_EXPIRE_SECONDS": int(
        os.environ.get("OAUTH_REFRESH_TOKEN_EXPIRE_SECONDS", 30 * 24 * 3600)
    ),
    "AUTHORIZATION_CODE_EXPIRE_SECONDS": 60,
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    # http is accepted for loopback redirect URIs only; tenants.oauth_views enforces that.
    "ALLOWED_REDIRECT_URI_SCHEMES": ["http", "https"],
    "REQUEST_APPROVAL_PROMPT": "force",
    "OAUTH2_RESPONSE_TYPES_SUPPORTED": ["code"],
    "OAUTH2_GRANT_TYPES_SUPPORTED": ["authorization_code", "refresh_token"],
    "OAUTH2_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED": [
        "none",
        "client_secret_basic",
        "client_secret_post",
    ],
    "DCR_ENABLED": True,
    "DCR_REGISTRATION_PERMISSION_CLASSES": ("oauth2_provider.dcr.AllowAllDCRPermission",),
    "CIMD_ENABLED": True,
}
# Open registration is bounded: per-IP rate, a cap on stored clients, expiry of unused ones.
OAUTH_REGISTRATIONS_PER_IP_PER_HOUR = int(os.environ.get("OAUTH_REGISTRATIONS_PER_IP_PER_HOUR", 20))
OAUTH_MAX_REGISTERED_CLIENTS = int(os.environ.get("OAUTH_MAX_REGISTERED_CLIENTS", 5000))
OAUTH_UNUSED_CLIENT_TTL_S = int(os.environ.get("OAUTH_UNUSED_CLIENT_TTL_S", 24 * 3600))
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = FORTRANSPIRE_HOME / "static"

# Requests carry Fortran source; 1 MB is plenty and bounds what one request can make us parse.
# The body limit leaves room for JSON escaping around a source of the maximum size.
FORTRANSPIRE_MAX_SOURCE_BYTES = int(os.environ.get("FORTRANSPIRE_MAX_SOURCE_BYTES", 1_048_576))
DATA_UPLOAD_MAX_MEMORY_SIZE = FORTRANSPIRE_MAX_SOURCE_BYTES + 256 * 1024

# Per-tenant numba caches (compiled ports kept between verifications, kernels.result_cache).
# Not under FORTRANSPIRE_HOME: sandboxed ports must see their tenant's cache, never the server's state.
FORTRANSPIRE_CACHE_DIR = Path(
    os.environ.get("FORTRANSPIRE_CACHE_DIR")
    or (
        Path(tempfile.gettempdir()) / f"fortranspire-test-cache-{os.getuid()}"
        if TESTING
        else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fortranspire"
    )
)

# Warm port sandboxes kept for tenants' next verifications (kernels.engine.spare_ports): each
# holds an idle interpreter with numba imported (~200 MB) for at most 5 minutes. Off in tests,
# whose runs count the sandboxes they start.
FORTRANSPIRE_SPARE_PORTS = int(os.environ.get("FORTRANSPIRE_SPARE_PORTS", 0 if TESTING else 2))

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
    "loggers": {"pgserver": {"level": "WARNING"}},
}

"""Settings read from the environment.

Development (DEBUG=1, the default for `make run` and the tests) works with no
configuration: SQLite, a generated credential key file, loopback requests
allowed for the built-in Sandbox API. Production (DEBUG unset or 0) refuses to
start without SECRET_KEY and CREDENTIAL_KEYS, so a missing key is a crash at
boot, not a silently insecure deployment.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


DEBUG = env_bool("DEBUG", default=False)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "django-insecure-development-only-key-not-for-production-use"
elif not DEBUG and (len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5):
    # The same bar as `check --deploy` (security.W009), enforced at boot.
    raise ImproperlyConfigured(
        "SECRET_KEY must be at least 50 characters long with at least 5 different characters "
        "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(64))')."
    )

ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "").split(",") if h.strip()]
if DEBUG and not ALLOWED_HOSTS:
    ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", "testserver"]

CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "crispy_forms",
    "crispy_bootstrap5",
    "huey.contrib.djhuey",
    "patchworks_site",
    "connectors",
    "instances",
    "flows",
    "marketplace",
    "alerts",
    "sandbox",
]

MIDDLEWARE = [
    "patchworks_site.middleware.HealthCheckMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "patchworks_site.middleware.RequestSizeLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "patchworks_site.middleware.PrivatePagesMiddleware",
    "patchworks_site.audit.AuditUserMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

if not DEBUG:
    # Production serves static files itself; development lets runserver do it.
    MIDDLEWARE.insert(2, "whitenoise.middleware.WhiteNoiseMiddleware")

ROOT_URLCONF = "patchworks_site.urls"

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
                "patchworks_site.tenancy.tenancy_context",
            ],
        },
    },
    # Only the manage connectors page's cards and instance rows (<app>/jinja2/): see patchworks_site/jinja2.py.
    {
        "BACKEND": "django.template.backends.jinja2.Jinja2",
        "APP_DIRS": True,
        "OPTIONS": {"environment": "patchworks_site.jinja2.environment"},
    },
]

WSGI_APPLICATION = "patchworks_site.wsgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("CONN_MAX_AGE", "60")),
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["transaction_mode"] = "IMMEDIATE"
    # A file, not Django's shared in-memory database, so the browser tests' live
    # server can answer overlapping requests (htmx previews) on separate connections.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / f".test-db-{os.getpid()}.sqlite3")}

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# With Redis, sessions are read from the cache (written through to the
# database): a query less on every page. Not with the in-memory cache, which
# each process keeps for itself: another worker would still see a session
# that was logged out.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db" if REDIS_URL else "django.contrib.sessions.backends.db"

AUTH_USER_MODEL = "patchworks_site.User"
# The first backend loads the user with its company (one query per request);
# ModelBackend stays listed so sessions it signed in remain valid.
AUTHENTICATION_BACKENDS = [
    "patchworks_site.backends.CompanyUserBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "connectors:manage"
LOGOUT_REDIRECT_URL = "login"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
MEDIA_URL = "media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", BASE_DIR / "media"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CRISPY_ALLOWED_TEMPLATE_PACKS = "bootstrap5"
CRISPY_TEMPLATE_PACK = "bootstrap5"

TASKS = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}}

# --- Task engine (huey) -------------------------------------------------
# Flow runs and schedules run on huey workers (`manage.py run_huey`). Without
# REDIS_URL the queue is a SQLite file beside the database: no extra service for
# development or a single host. With REDIS_URL it is Redis, which workers on
# several hosts can share. The run rows in the database are the source of truth;
# the queue only says "look at run N".
HUEY_SQLITE_PATH = os.environ.get("HUEY_SQLITE_PATH", "")
if not HUEY_SQLITE_PATH:
    HUEY_SQLITE_PATH = str(BASE_DIR / "huey.sqlite3")
    if "PYTEST_VERSION" in os.environ:
        # A test run never touches the development queue (like the per-process test DB),
        # and removes its own queue file when it ends.
        import atexit
        import tempfile

        HUEY_SQLITE_PATH = str(Path(tempfile.gettempdir()) / f"pw-huey-test-{os.getpid()}.sqlite3")
        atexit.register(
            lambda path=HUEY_SQLITE_PATH: [Path(path + suffix).unlink(missing_ok=True) for suffix in ("", "-wal", "-shm")]
        )
HUEY = {
    "name": os.environ.get("HUEY_NAME", "patchworks"),
    # Tasks go to workers even with DEBUG on (djhuey would otherwise run them inline).
    "immediate": env_bool("HUEY_IMMEDIATE", default=False),
    "results": False,
    "utc": True,
    "consumer": {
        "workers": int(os.environ.get("HUEY_WORKERS", "2")),
        "worker_type": "thread",
        "check_worker_health": True,
        # An idle worker polls the SQLite queue with a back-off: at most this long between looks,
        # so a run queued on an idle worker starts within a quarter of a second (huey's default is 10 s;
        # a look is one indexed SELECT on a local file).
        "max_delay": float(os.environ.get("HUEY_MAX_DELAY", "0.25")),
    },
}
if REDIS_URL:
    HUEY |= {"huey_class": "huey.RedisHuey", "connection": {"url": REDIS_URL}}
else:
    HUEY |= {"huey_class": "huey.SqliteHuey", "connection": {"filename": HUEY_SQLITE_PATH}}

# A running flow run holds a lease that its worker renews every third of it
# (heartbeat). Every worker process looks for expired leases every
# FLOW_WATCH_INTERVAL_SECONDS: a run whose worker was lost resumes from its
# checkpoint as its next attempt, so within lease + interval (+ a worker free).
FLOW_RUN_LEASE_SECONDS = float(os.environ.get("FLOW_RUN_LEASE_SECONDS", "10"))
# The name of this host in what its workers write (a run's worker, a lease, a periodic job's claim):
# HOSTNAME (containers set it to the container's name), else the machine's host name.
HOST_NAME = os.environ.get("HOSTNAME", "").strip() or socket.gethostname()
FLOW_WATCH_INTERVAL_SECONDS = float(os.environ.get("FLOW_WATCH_INTERVAL_SECONDS", "2"))
# How many workers may be lost on one run before it fails (each resume is an attempt).
FLOW_RUN_MAX_ATTEMPTS = int(os.environ.get("FLOW_RUN_MAX_ATTEMPTS", "3"))
# How many times one run may park (wait for a rate limit without a worker) before it fails:
# an API that answers 429 after every wait would otherwise keep it waiting without end.
FLOW_RUN_MAX_PARKS = int(os.environ.get("FLOW_RUN_MAX_PARKS", "50"))
# The most pages one run reads from one endpoint (an endpoint's pagination.max_pages may set fewer or more).
FLOW_MAX_PAGES = int(os.environ.get("FLOW_MAX_PAGES", "1000"))
# A connection shape's retries wait this long times the attempt number.
FLOW_RETRY_DELAY_SECONDS = float(os.environ.get("FLOW_RETRY_DELAY_SECONDS", "1"))
# A run whose next request may only go later than OUTBOUND_RATE_LIMIT_MAX_WAIT (a rate
# limit, a long Retry-After) parks: it gives its worker back and resumes then.
# Bounds on a run's data: a run that passes one fails with a message naming the shape and the bound.
# The most bytes of JSON a page may hold after any shape (a map's constants can multiply a page's size).
FLOW_MAX_PAGE_BYTES = int(os.environ.get("FLOW_MAX_PAGE_BYTES", str(8 * 1024 * 1024)))
# A batch send splits a page into requests of at most this many records ...
FLOW_MAX_BATCH_RECORDS = int(os.environ.get("FLOW_MAX_BATCH_RECORDS", "1000"))
# ... and at most this many bytes of request body (an item larger than this alone is refused).
FLOW_MAX_REQUEST_BYTES = int(os.environ.get("FLOW_MAX_REQUEST_BYTES", str(4 * 1024 * 1024)))
# The deepest nesting of objects and lists a received record (or an answer) may have.
FLOW_MAX_RECORD_DEPTH = int(os.environ.get("FLOW_MAX_RECORD_DEPTH", "64"))
# The most minutes a company may allow one run to take (its own maximum run duration is set within this).
FLOW_RUN_MAX_DURATION_CEILING_MINUTES = int(os.environ.get("FLOW_RUN_MAX_DURATION_CEILING_MINUTES", "360"))
# The most runs of one company that may hold a worker at once (each company sets its own maximum within this;
# its other runs wait queued while other companies' runs start).
FLOW_COMPANY_MAX_CONCURRENT_RUNS_CEILING = int(os.environ.get("FLOW_COMPANY_MAX_CONCURRENT_RUNS_CEILING", "20"))
# The run page's steps keep each page's records and every request (redacted before they are stored):
# each stored body (records of a page, a request's or a response's body) is cut at this many bytes ...
FLOW_PAYLOAD_BODY_MAX_BYTES = int(os.environ.get("FLOW_PAYLOAD_BODY_MAX_BYTES", str(256 * 1024)))
# ... and a run keeps at most this many bytes of them; past it the run goes on without keeping more.
FLOW_RUN_PAYLOADS_MAX_BYTES = int(os.environ.get("FLOW_RUN_PAYLOADS_MAX_BYTES", str(50 * 1024 * 1024)))
# Retention deletes stored records and requests in batches of this many rows, each its own transaction.
FLOW_PAYLOAD_DELETE_BATCH = int(os.environ.get("FLOW_PAYLOAD_DELETE_BATCH", "1000"))
# ... and runs past the company's run log retention in batches of this many runs (with their shapes).
FLOW_RUN_DELETE_BATCH = int(os.environ.get("FLOW_RUN_DELETE_BATCH", "1000"))

# --- Metrics (Prometheus) ------------------------------------------------
# GET /metrics answers only `Authorization: Bearer <METRICS_TOKEN>`; without a
# token configured it is a 404. See patchworks_site/metrics.py for what it holds.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
# The directory every process of this host (web server and task workers) writes
# its counters to, so one scrape of any web process reports them all. It must be
# set in the environment of every process before it starts and emptied when the
# host's processes are all (re)started (`make run` does both). Unset: each
# process counts for itself (tests, a single process).
PROMETHEUS_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
if PROMETHEUS_MULTIPROC_DIR:
    # prometheus_client writes its files there from the first metric on.
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)

# --- Credentials at rest -------------------------------------------------
# CREDENTIAL_KEYS: comma-separated "key_id:base64-32-bytes" pairs; the last is
# the one new secrets are encrypted with. In development a key file outside
# version control is generated by `make run` / the tests.
CREDENTIAL_KEY_FILE = Path(os.environ.get("CREDENTIAL_KEY_FILE", BASE_DIR / ".credential-keys"))
CREDENTIAL_KEYS = os.environ.get("CREDENTIAL_KEYS", "")
if not CREDENTIAL_KEYS:
    if not DEBUG:
        raise ImproperlyConfigured("CREDENTIAL_KEYS must be set when DEBUG is off.")
    if CREDENTIAL_KEY_FILE.exists():
        CREDENTIAL_KEYS = CREDENTIAL_KEY_FILE.read_text().strip()

# --- Outbound requests ---------------------------------------------------
# Loopback is refused by the SSRF guard unless this is on; it is on in
# development so the built-in Sandbox API can be reached.
OUTBOUND_ALLOW_LOOPBACK = env_bool("OUTBOUND_ALLOW_LOOPBACK", default=DEBUG)
OUTBOUND_CONNECT_TIMEOUT = float(os.environ.get("OUTBOUND_CONNECT_TIMEOUT", "5"))
OUTBOUND_READ_TIMEOUT = float(os.environ.get("OUTBOUND_READ_TIMEOUT", "15"))
# The most one exchange (connect, headers, body, redirects) may take in total:
# read timeouts apply to each read, so a server dripping bytes never trips them.
OUTBOUND_TOTAL_TIMEOUT = float(os.environ.get("OUTBOUND_TOTAL_TIMEOUT", "20"))
# Keep connections to third-party APIs alive between requests (per worker process).
OUTBOUND_KEEP_ALIVE = env_bool("OUTBOUND_KEEP_ALIVE", default=True)
# Rate limits and connection pools (instances/outbound/limits/). With REDIS_URL they
# live in Redis (every machine); otherwise in this SQLite file, shared by every
# process of the machine but not by other machines.
LIMITS_STORE_PATH = Path(os.environ.get("LIMITS_STORE_PATH") or BASE_DIR / "limits.sqlite3")
LIMITS_KEY_PREFIX = os.environ.get("LIMITS_KEY_PREFIX", "pw")
# A request whose rate limit wait would be longer than this is not queued: it
# is throttled until the moment the limit allows it (a rescheduled step).
OUTBOUND_RATE_LIMIT_MAX_WAIT = float(os.environ.get("OUTBOUND_RATE_LIMIT_MAX_WAIT", "30"))
# Added to every rate limit window, so jitter between processes cannot squeeze
# one request too many into a window at the API's side.
RATE_LIMIT_MARGIN_SECONDS = float(os.environ.get("RATE_LIMIT_MARGIN_SECONDS", "0.01"))
# A connection pool slot is a lease its request renews every third of it for as
# long as it runs (OUTBOUND_TOTAL_TIMEOUT or longer); a killed worker's slot
# comes back after at most this long. 9 s: back well within 15 s of a kill,
# while a renewal that fails (a store hiccup) is retried every 0.75 s for the
# 6 s left before a healthy slot would be lost, at one store round trip per
# request every 3 s. A queued request's place is a lease of half this, and a
# pool's timeout is never shorter than this plus a third (12 s by default).
CONNECTION_POOL_LEASE_SECONDS = float(os.environ.get("CONNECTION_POOL_LEASE_SECONDS", "9"))
# How often a request answered 429 is retried (after the API's Retry-After).
OUTBOUND_429_RETRIES = int(os.environ.get("OUTBOUND_429_RETRIES", "2"))
# The longest an API's Retry-After (or rate limit reset header) may pause an instance's rate limit.
OUTBOUND_MAX_RETRY_AFTER_SECONDS = float(os.environ.get("OUTBOUND_MAX_RETRY_AFTER_SECONDS", "3600"))

# Base URL the Sandbox connector's instances call by default: the address the
# dashboard is served on (`PORT=8080 make run` serves and calls port 8080).
SANDBOX_BASE_URL = os.environ.get(
    "SANDBOX_BASE_URL", f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/sandbox/api"
)
# Neither given: a new instance's Sandbox address is the host its wizard was opened on.
SANDBOX_BASE_URL_CONFIGURED = "SANDBOX_BASE_URL" in os.environ or "PORT" in os.environ
# How long the Sandbox's OAuth 2 access tokens (authorisation code grant) live,
# short so that refreshing can be seen in the demo.
SANDBOX_ACCESS_TOKEN_LIFETIME = int(os.environ.get("SANDBOX_ACCESS_TOKEN_LIFETIME", "120"))
# The built-in Sandbox API (a public demo API) is served only when this is on: by default in development only.
SANDBOX_ENABLED = env_bool("SANDBOX_ENABLED", default=DEBUG)
# Bounds of the Sandbox when it is on. The longest `delay_ms` a request may ask for (longer is refused with 400):
SANDBOX_MAX_DELAY_MS = int(os.environ.get("SANDBOX_MAX_DELAY_MS", "2000"))
# The newest orders each Sandbox account keeps, by count and by bytes (older ones are dropped):
SANDBOX_MAX_ORDERS_PER_ACCOUNT = int(os.environ.get("SANDBOX_MAX_ORDERS_PER_ACCOUNT", "5000"))
SANDBOX_MAX_BYTES_PER_ACCOUNT = int(os.environ.get("SANDBOX_MAX_BYTES_PER_ACCOUNT", str(10 * 1024 * 1024)))
# The most bytes of received orders the Sandbox stores in all (beyond it, new orders are refused with 507):
SANDBOX_MAX_STORED_BYTES = int(os.environ.get("SANDBOX_MAX_STORED_BYTES", str(200 * 1024 * 1024)))
# Requests a second one client (address and account) may make to the Sandbox API (beyond: 429 with Retry-After):
SANDBOX_RATE_LIMIT_PER_SECOND = int(os.environ.get("SANDBOX_RATE_LIMIT_PER_SECOND", "50"))
# Wrong logins on the Sandbox's consent page allowed from one address within the window (then refused until it passes):
SANDBOX_LOGIN_ATTEMPTS = int(os.environ.get("SANDBOX_LOGIN_ATTEMPTS", "5"))
SANDBOX_LOGIN_WINDOW_SECONDS = int(os.environ.get("SANDBOX_LOGIN_WINDOW_SECONDS", "900"))
# Redirect URIs registered with the Sandbox's OAuth app, compared exactly (comma-separated). Empty: the dashboard's
# callback on the origin the consent page is served on, on SANDBOX_BASE_URL's origin, and OAUTH_REDIRECT_URI.
SANDBOX_REDIRECT_URIS = [u.strip() for u in os.environ.get("SANDBOX_REDIRECT_URIS", "").split(",") if u.strip()]

# The one OAuth 2 redirect URI of this deployment (register it with every provider).
# Empty: the callback on the host the dashboard is served on.
OAUTH_REDIRECT_URI = os.environ.get("OAUTH_REDIRECT_URI", "")
# The longest lifetime an OAuth 2 token answer's expires_in is taken for (longer values are cut to it).
OAUTH_MAX_TOKEN_LIFETIME = int(os.environ.get("OAUTH_MAX_TOKEN_LIFETIME", str(365 * 24 * 3600)))

# --- Alerts and email ----------------------------------------------------
# Alert emails go through Django's email framework (its MAILERS setting, built
# here from the environment). Development prints them on the console (the
# `make run` worker's output); production sends them through the SMTP server
# EMAIL_HOST and refuses to start without one, unless EMAIL_BACKEND names
# another backend explicitly (the dummy backend sends none).
_email_backend = os.environ.get("EMAIL_BACKEND", "")
_email_host = os.environ.get("EMAIL_HOST", "")
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "")
if _email_host and not _email_backend:
    _use_tls, _use_ssl = env_bool("EMAIL_USE_TLS"), env_bool("EMAIL_USE_SSL")
    if _use_tls and _use_ssl:
        raise ImproperlyConfigured("EMAIL_USE_TLS (STARTTLS) and EMAIL_USE_SSL (implicit TLS) cannot both be on.")
    if os.environ.get("EMAIL_HOST_USER") and not os.environ.get("EMAIL_HOST_PASSWORD") and not DEBUG:
        raise ImproperlyConfigured("EMAIL_HOST_PASSWORD must be set with EMAIL_HOST_USER.")
    if not DEFAULT_FROM_EMAIL and not DEBUG:
        raise ImproperlyConfigured("DEFAULT_FROM_EMAIL must be set when DEBUG is off: the sender of alert emails.")
    MAILERS = {"default": {
        "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "OPTIONS": {
            "host": _email_host,
            "port": int(os.environ["EMAIL_PORT"]) if os.environ.get("EMAIL_PORT") else None,
            "username": os.environ.get("EMAIL_HOST_USER", ""),
            "password": os.environ.get("EMAIL_HOST_PASSWORD", ""),
            "use_tls": _use_tls,
            "use_ssl": _use_ssl,
            # Seconds one SMTP connection may block (connect, each command): a stuck mail server never holds a worker.
            "timeout": float(os.environ.get("EMAIL_TIMEOUT", "10")),
        },
    }}
elif _email_backend:
    MAILERS = {"default": {"BACKEND": _email_backend}}
    if _email_backend == "django.core.mail.backends.dummy.EmailBackend":
        # Sending no email is a choice production may make (this file's own advice), which `check --deploy`,
        # and so serve_prod, would refuse as a development backend.
        SILENCED_SYSTEM_CHECKS = ["mail.E001"]
elif DEBUG:
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.console.EmailBackend"}}
else:
    raise ImproperlyConfigured(
        "EMAIL_HOST must be set when DEBUG is off: alert emails are sent through it (with EMAIL_PORT, "
        "EMAIL_HOST_USER, EMAIL_HOST_PASSWORD, EMAIL_USE_TLS or EMAIL_USE_SSL, and DEFAULT_FROM_EMAIL). "
        "To send no email, set EMAIL_BACKEND=django.core.mail.backends.dummy.EmailBackend."
    )
DEFAULT_FROM_EMAIL = DEFAULT_FROM_EMAIL or "Patchworks alerts <alerts@localhost>"
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# The dashboard's address, for the links in alerts ("https://patchworks.example.com"); empty: the links are paths.
DASHBOARD_URL = os.environ.get("DASHBOARD_URL", "")
if not DASHBOARD_URL and DEBUG:
    DASHBOARD_URL = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}"
# A delivery is tried this many times in all; the n-th retry waits ALERT_RETRY_DELAY_SECONDS * 2**(n-1).
ALERT_DELIVERY_ATTEMPTS = int(os.environ.get("ALERT_DELIVERY_ATTEMPTS", "5"))
ALERT_RETRY_DELAY_SECONDS = float(os.environ.get("ALERT_RETRY_DELAY_SECONDS", "30"))
# Alerts (with their deliveries and attempts) older than this are deleted, hourly.
ALERT_RETENTION_DAYS = int(os.environ.get("ALERT_RETENTION_DAYS", "90"))
# The most one webhook POST may take in all (its socket deadline), well under OUTBOUND_TOTAL_TIMEOUT.
ALERT_WEBHOOK_TIMEOUT = float(os.environ.get("ALERT_WEBHOOK_TIMEOUT", "10"))

if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True

SESSION_COOKIE_HTTPONLY = True

# No request body may be larger than this (the largest upload, an OpenAPI
# document, is at most 8 MB); checked before anything reads the body.
MAX_REQUEST_BYTES = int(os.environ.get("MAX_REQUEST_BYTES", str(10 * 1024 * 1024)))

# Content-Security-Policy (Django's built-in middleware): scripts only from our
# own static files, never inline, no eval; nothing framed; forms post only here.
# Inline style attributes stay allowed (Bootstrap components set them).
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "style-src-attr": [CSP.UNSAFE_INLINE],
    "img-src": [CSP.SELF, "data:"],
    "font-src": [CSP.SELF],
    "connect-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.SELF],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
    # urllib3 logs every request line, query string included, at DEBUG: an API
    # key sent as a query parameter would reach the logs with LOG_LEVEL=DEBUG.
    # oauthlib logs OAuth 1 signature base strings (the token in them) at DEBUG.
    # The task workers say what they execute, once (run_huey adds no handler of its own when one exists).
    "loggers": {
        "urllib3": {"level": "INFO"},
        "oauthlib": {"level": "INFO"},
        "huey": {"handlers": ["console"], "level": os.environ.get("HUEY_LOG_LEVEL", "INFO"), "propagate": False},
    },
}

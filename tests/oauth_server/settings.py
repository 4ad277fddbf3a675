"""Django settings for the OAuth2 authorization server the integration tests run against.

The server is django-oauth-toolkit (DOT), unmodified; this file is configuration only.
serve.py sets the TOKEND_OAUTH_* variables before Django reads this module.
"""

import os

# Test-only key: the server lives for one test on 127.0.0.1 and its DB is thrown away.
SECRET_KEY = "tokend-tests-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True

# The smallest app set DOT's token endpoint needs: users (auth) and its own models.
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "oauth2_provider",
]
MIDDLEWARE = []
ROOT_URLCONF = "urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["TOKEND_OAUTH_DB"],
    }
}
# Tables straight from the models (serve.py runs migrate --run-syncdb), as Django's test
# runner does with MIGRATE=False: 0.05 s instead of 1.0 s of replaying every migration.
MIGRATION_MODULES = {"auth": None, "contenttypes": None, "oauth2_provider": None}

# Django's recommended hasher for tests. DOT hashes client secrets with the same
# hasher; the default PBKDF2 made each token request take 0.2 s (password grant 0.4 s)
# instead of 6 ms here, and startup 0.7 s longer.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

OAUTH2_PROVIDER = {
    # A few seconds in tests, so expiry and refresh happen while the test runs.
    "ACCESS_TOKEN_EXPIRE_SECONDS": int(os.environ["TOKEND_OAUTH_ACCESS_LIFETIME"]),
    # Default (None): a refresh token lives until it is used.
    "REFRESH_TOKEN_EXPIRE_SECONDS": None,
    # Rotation: each refresh issues a new refresh token and revokes the old one at once
    # (no grace period), which is what tokend must cope with.
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_GRACE_PERIOD_SECONDS": 0,
    # When on, replaying a spent refresh token also revokes its successors (RFC 9700 §4.14.2).
    "REFRESH_TOKEN_REUSE_PROTECTION": os.environ.get("TOKEND_OAUTH_REUSE_PROTECTION") == "1",
    "SCOPES": {"read": "Read", "write": "Write"},
    "DEFAULT_SCOPES": ["read"],
    # DOT 3.x allows the password grant (with a warning); 4.0 will refuse it by default.
    # tokend supports the grant, so keep it on explicitly.
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": False,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "INFO"},
}

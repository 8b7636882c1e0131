"""Production settings fail loudly without their keys and pass Django's deployment checks."""

import base64
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = "prod-1:" + base64.b64encode(b"p" * 32).decode()
GOOD_SECRET_KEY = "a-long-random-production-secret-key-" + "q8Zr!x2@Lm#4Vb$7Nc%1Kd^6Jf&9Hg*3"
MAIL = {"EMAIL_HOST": "smtp.example.com", "DEFAULT_FROM_EMAIL": "alerts@example.com"}


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    unset = {"DEBUG", "SECRET_KEY", "CREDENTIAL_KEYS", "DATABASE_URL", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    clean = {k: v for k, v in os.environ.items() if k not in unset and not k.startswith("EMAIL_")}
    clean.update(MAIL)
    clean.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120
    )


def test_production_refuses_to_start_without_a_secret_key():
    result = run_manage("check", CREDENTIAL_KEYS=KEY)
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off." in result.stderr


def test_production_refuses_to_start_without_credential_keys():
    result = run_manage("check", SECRET_KEY=GOOD_SECRET_KEY)
    assert result.returncode != 0
    assert "CREDENTIAL_KEYS must be set when DEBUG is off." in result.stderr


def test_production_refuses_a_short_or_repetitive_secret_key():
    for weak in ("short-key-0123456789", "x" * 60, GOOD_SECRET_KEY[:49]):
        result = run_manage("check", SECRET_KEY=weak, CREDENTIAL_KEYS=KEY)
        assert result.returncode != 0
        assert "SECRET_KEY must be at least 50 characters long" in result.stderr


def test_production_settings_pass_the_deployment_checklist():
    result = run_manage(
        "check", "--deploy", "--fail-level", "WARNING",
        SECRET_KEY=GOOD_SECRET_KEY,
        CREDENTIAL_KEYS=KEY,
        ALLOWED_HOSTS="patchworks.example.com",
    )
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_mail_server_for_alert_emails():
    result = run_manage("check", SECRET_KEY=GOOD_SECRET_KEY, CREDENTIAL_KEYS=KEY, EMAIL_HOST="")
    assert result.returncode != 0
    assert "EMAIL_HOST must be set when DEBUG is off: alert emails are sent through it" in result.stderr


def test_production_refuses_a_mail_server_without_a_sender_address():
    result = run_manage("check", SECRET_KEY=GOOD_SECRET_KEY, CREDENTIAL_KEYS=KEY, DEFAULT_FROM_EMAIL="")
    assert result.returncode != 0
    assert "DEFAULT_FROM_EMAIL must be set when DEBUG is off" in result.stderr


def test_production_may_choose_to_send_no_email_by_naming_a_backend():
    result = run_manage(
        "check", SECRET_KEY=GOOD_SECRET_KEY, CREDENTIAL_KEYS=KEY, EMAIL_HOST="", DEFAULT_FROM_EMAIL="",
        EMAIL_BACKEND="django.core.mail.backends.dummy.EmailBackend",
    )
    assert result.returncode == 0, result.stderr

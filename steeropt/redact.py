"""Secrets never leave the process: one pass over everything steeropt writes out (MLflow params, tags,
artifacts, traces and assessments; runs/ files; console output; log records).

`redact(text)` removes
- the password of any URL (`postgresql+psycopg2://steer:***@host`, `postgresql://:***@host`), and for http(s)
  URLs a user part without a password too (a token used as user name: `https://***@host`);
- the value of a secret-looking URL query parameter (`?password=***`, `&sslpassword=***`, `&api_key=***`) and
  of libpq's keyword form (`host=db password=***`);
- every secret registered with `register` (the API keys the study's judge and server read from the
  environment, the passwords found in the spec's URLs), wherever it appears.
`scrub(obj)` applies it to every string inside dicts, lists and tuples. `install()` hooks it into Python's
logging and warnings, so third-party log lines are covered too.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import warnings
from urllib.parse import unquote

MASK = "***"
SECRET_PARAMS = ("password", "passwd", "pwd", "sslpassword", "secret", "client_secret", "token", "access_token",
                 "api_key", "apikey", "api-key", "auth", "authorization", "key")
KEY_ENVS = ("OPENAI_API_KEY", "STEEROPT_SERVE_API_KEY")
_AUTHORITY = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#\s@]*(?:@[^/?#\s@]*)*)@")
# a secret-looking parameter of a URL query (`?password=`, `&api_key=`), or libpq's keyword form (`password=...`)
_PARAM = re.compile(r"(?P<lead>(?:[?&;](?:%s)|(?:^|(?<=\s))(?:password|sslpassword))=)(?P<value>[^&#\s;,)\"']+)"
                    % "|".join(re.escape(k) for k in SECRET_PARAMS), re.IGNORECASE)
_secrets: set[str] = set()
_lock = threading.Lock()
MIN_SECRET = 4  # shorter registered values would mask ordinary text


def register(*values: str | None) -> None:
    """Mask these exact strings (and their URL-decoded forms) wherever `redact` sees them."""
    with _lock:
        for v in values:
            if v and len(v) >= MIN_SECRET:
                _secrets.update({v, unquote(v)})


def register_env(*names: str) -> None:
    """Mask the values of these environment variables (API keys), plus the ones steeropt always reads."""
    register(*(os.environ.get(n) for n in (*KEY_ENVS, *names) if n))


def register_url(url: str | None) -> None:
    """Mask the password (and secret query parameters) found in a URL, also where it appears without it."""
    if not url:
        return
    for m in _AUTHORITY.finditer(url):
        user, sep, pw = m.group("userinfo").partition(":")
        register(pw if sep else (user if m.group("scheme").lower().startswith("http") else None))
    register(*(m.group("value") for m in _PARAM.finditer(url)))


def _authority(m: re.Match) -> str:
    scheme, info = m.group("scheme"), m.group("userinfo")
    user, sep, _pw = info.partition(":")
    if sep:
        return f"{scheme}{user}:{MASK}@"
    if scheme.lower().startswith("http") and user:
        return f"{scheme}{MASK}@"
    return m.group(0)


def redact(text):
    """`text` with URL passwords, secret parameters and registered secrets masked (non-strings unchanged)."""
    if not isinstance(text, str) or not text:
        return text
    out = _AUTHORITY.sub(_authority, text)
    out = _PARAM.sub(lambda m: m.group("lead") + MASK, out)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for s in secrets:
        if s in out:
            out = out.replace(s, MASK)
    return out


def scrub(obj):
    """A copy of `obj` with `redact` applied to every string in it (dict keys included)."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {scrub(k): scrub(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(scrub(v) for v in obj)
    return obj


class _Records:
    """A log-record factory that masks the formatted message (and the traceback text) of every record."""

    def __init__(self, base):
        self.base = base

    def __call__(self, *args, **kwargs):
        record = self.base(*args, **kwargs)
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001  (a malformed record stays as logging would show it)
            return record
        clean = redact(msg)
        if clean != msg or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return record


def install() -> None:
    """Mask secrets in every log record and warning of this process (idempotent)."""
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _Records):
        logging.setLogRecordFactory(_Records(factory))
    show = warnings.showwarning
    if not getattr(show, "_steeropt_redacts", False):
        def showwarning(message, category, filename, lineno, file=None, line=None):
            show(redact(str(message)), category, filename, lineno, file, line)

        showwarning._steeropt_redacts = True
        warnings.showwarning = showwarning

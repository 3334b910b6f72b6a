"""Secrets: what counts as one, finding them in a config, and scrubbing them from output.

Two lines of defence. First, the config refuses anything that looks like a credential (by its
name or by its shape, nested tables included, and user names or keys inside URLs), so a key
never enters the suite by way of a file or a flag. Second, everything the suite writes or prints
passes through ``scrub``, which replaces key-shaped text, URL credentials and the keys read from
the environment with ``***``: a key that slips past the first line (a server echoing it in an
error body, a new field nobody thought of) still stays out of files and terminals.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import parse_qsl, urlparse

REDACTED = "***"

# Names that hold a credential, compared after lower-casing and turning '-' into '_'.
SECRET_NAMES = frozenset({
    "key", "apikey", "api_key", "token", "access_token", "auth", "authorization", "bearer",
    "password", "passwd", "pwd", "secret", "credential", "credentials", "cookie",
    "x_api_key", "private_key", "session_token", "refresh_token", "id_token", "client_secret",
})
SECRET_NAME_SUFFIXES = ("_key", "_apikey", "_token", "_secret", "_password", "_passwd",
                        "_credential", "_credentials")
# Suite settings whose names look like secrets but hold none.
NOT_SECRET_NAMES = frozenset({"api_key_env"})

# Shapes of well-known credentials, wherever they appear in text.
KEY_SHAPES = re.compile(
    r"\bsk-[A-Za-z0-9_-]{16,}"                       # OpenAI and compatible (sk-..., sk-proj-...)
    r"|\bhf_[A-Za-z0-9]{20,}"                        # Hugging Face
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}"                 # GitHub
    r"|\bAKIA[0-9A-Z]{16}\b"                         # AWS access key id
    r"|\bAIza[0-9A-Za-z_-]{35}"                      # Google API key
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"               # Slack
    r"|\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"   # JSON web token
    r"|(?i:\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}"        # an Authorization header's value
)
_URL_USERINFO = re.compile(r"(?<=://)[^/\s@\"'<>]+@")
_SECRET_QUERY = re.compile(
    r"(?i)([?&](?:api[_-]?key|key|token|access[_-]?token|auth|password|secret|sig|signature)=)"
    r"[^&\s#\"'<>]+")

_known: set[str] = set()


def is_secret_name(name: str) -> bool:
    norm = name.strip().lower().replace("-", "_")
    if norm in NOT_SECRET_NAMES:
        return False
    return norm in SECRET_NAMES or norm.endswith(SECRET_NAME_SUFFIXES)


def looks_like_key(text: str) -> bool:
    return bool(KEY_SHAPES.search(text))


def url_problem(url: str) -> str:
    """Why a URL may not be used because it carries a credential ('' when it carries none)."""
    parsed = urlparse(url)
    if parsed.username is not None or parsed.password is not None:
        return "has a user name or password in it (user:...@host)"
    secret_params = sorted({name for name, _ in parse_qsl(parsed.query, keep_blank_values=True)
                            if is_secret_name(name)})
    if secret_params:
        return f"has a credential in its query string ({', '.join(secret_params)}=...)"
    if looks_like_key(url):
        return "contains something shaped like an API key"
    return ""


def find_secrets(value: Any, path: str) -> list[str]:
    """Where in a config value (tables and lists walked) a credential appears, with why.

    Returns entries like ``"extra_body.auth.api_key (its name)"``; never the value itself.
    """
    found: list[str] = []
    if isinstance(value, dict):
        for name, item in value.items():
            where = f"{path}.{name}" if path else str(name)
            if is_secret_name(str(name)):
                found.append(f"{where} (a credential's name)")
            elif looks_like_key(str(name)):
                found.append(f"a name in {path or 'the config'} (shaped like a key)")
            else:
                found.extend(find_secrets(item, where))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found.extend(find_secrets(item, f"{path}[{index}]"))
    elif isinstance(value, str) and looks_like_key(value):
        found.append(f"{path} (its value is shaped like a key)")
    return found


def remember(*values: str) -> None:
    """Scrub these exact values from now on (keys read from the environment)."""
    _known.update(v for v in values if v and len(v) >= 4)


def scrub(text: str, extra: tuple[str, ...] | list[str] = ()) -> str:
    """Text with every credential replaced by ``***``: known keys, key shapes, URL credentials."""
    if not text:
        return text
    for secret in sorted({*_known, *(s for s in extra if s and len(s) >= 4)}, key=len,
                         reverse=True):
        text = text.replace(secret, REDACTED)
    text = KEY_SHAPES.sub(REDACTED, text)
    text = _URL_USERINFO.sub(REDACTED + "@", text)
    return _SECRET_QUERY.sub(lambda m: m.group(1) + REDACTED, text)


class ScrubbingStream:
    """A text stream wrapper that scrubs every write (the terminal's second line of defence)."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(scrub(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class ScrubLogFilter(logging.Filter):
    """Scrubs credentials from a log line (and its traceback) before a handler writes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        return True

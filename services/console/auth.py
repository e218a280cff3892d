"""Who may use the console: a configured user list with scrypt-hashed passwords, sessions, CSRF tokens, and
a limit on login attempts.

The scheme (docs/security.md, docs/support.md):

* **Users**: a JSON file (``EMD_CONSOLE_USERS``, default ``config/console-users.json``)
  ``{"users": {"alice": "scrypt$16384$8$1$<salt b64>$<hash b64>"}}``, written by ``emd console add-user``.
  Hashes are the standard library's ``hashlib.scrypt`` (RFC 7914; n=2**14, r=8, p=1, 16-byte salt), compared
  in constant time. No user file: nobody can log in, and the console shows nothing.
* **Every page needs a login**: dead letters, documents, clinics and the audit log name doctors, patients'
  documents and staff; an anonymous request gets the login page (JSON: 401).
* **Sessions**: a random 32-byte token in an ``HttpOnly``, ``SameSite=Strict`` cookie, ``Secure`` behind TLS
  (``EMD_CONSOLE_SECURE_COOKIES``), held in the console's memory for ``SESSION_SECONDS`` (8 h): a restart
  logs everybody out, and one console replica serves one set of sessions.
* **CSRF**: every session has its own random token; each form that changes something carries it as the
  hidden field ``csrf`` (JSON calls: the ``X-CSRF-Token`` header), checked in constant time. Together with
  ``SameSite=Strict`` a page of another site can neither read the token nor send the cookie.
* **Login attempts** (``LoginLimiter``): at most ``MAX_FAILURES`` (10) failures per user name and per client
  address within ``WINDOW_SECONDS`` (15 minutes); the next attempt locks that name (or address) out for
  ``LOCKOUT_SECONDS`` (15 minutes), during which even the right password is refused unchecked. Every failure
  and every lockout goes to the audit log and the log. The address is the TCP peer, or, when the peer is one
  of ``EMD_CONSOLE_TRUSTED_PROXIES``, the client its ``X-Forwarded-For`` names.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from producer.files import write_private

SESSION_SECONDS = 8 * 3600
COOKIE = "emd_console_session"
MAX_FAILURES = 10
WINDOW_SECONDS = 15 * 60
LOCKOUT_SECONDS = 15 * 60
_N, _R, _P, _LEN = 2**14, 8, 1, 32


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """The stored form of ``password``: ``scrypt$n$r$p$salt$hash`` (base64)."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=_LEN)
    return f"scrypt${_N}${_R}${_P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (constant-time; a malformed entry never matches)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(want),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def load_users(path: Path) -> dict[str, str]:
    """``name → stored hash`` from the users file; {} when there is none (nobody can log in)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in users.items()
    ):
        raise ValueError(f'{path}: expected {{"users": {{name: scrypt hash}}}}')
    return dict(users)


def add_user(path: Path, name: str, password: str) -> None:
    """Add or replace ``name`` in the users file (created if missing)."""
    users = load_users(path) if Path(path).exists() else {}
    users[name] = hash_password(password)
    write_private(path, json.dumps({"users": users}, indent=2) + "\n")  # hashes: 0600, like every secret


@dataclass(frozen=True)
class Session:
    user: str
    csrf: str
    expires: float


class Sessions:
    """Logged-in users by cookie token (in memory)."""

    def __init__(self, users: dict[str, str], *, clock=time.time) -> None:
        self.users = users
        self._sessions: dict[str, Session] = {}
        self._clock = clock

    def login(self, name: str, password: str) -> tuple[str, Session] | None:
        stored = self.users.get(name)
        # an unknown user costs the same scrypt as a known one: the timing does not tell which exist
        ok = verify_password(password, stored or hash_password("", salt=b"\0" * 16))
        if stored is None or not ok:
            return None
        token = secrets.token_urlsafe(32)
        session = Session(name, secrets.token_urlsafe(32), self._clock() + SESSION_SECONDS)
        self._sessions[token] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        session = self._sessions.get(token or "")
        if session is None:
            return None
        if session.expires < self._clock():
            self._sessions.pop(token or "", None)
            return None
        return session

    def logout(self, token: str | None) -> None:
        self._sessions.pop(token or "", None)

    @staticmethod
    def csrf_ok(session: Session | None, token: str | None) -> bool:
        return session is not None and bool(token) and hmac.compare_digest(session.csrf, token or "")


class LoginLimiter:
    """Failed logins per user name and per client address; a lockout once either has ``max_failures`` within
    ``window`` seconds (the module docstring has the policy)."""

    def __init__(
        self,
        *,
        max_failures: int = MAX_FAILURES,
        window: float = WINDOW_SECONDS,
        lockout: float = LOCKOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures, self.window, self.lockout, self.clock = max_failures, window, lockout, clock
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _keys(user: str, address: str | None) -> list[str]:
        return [f"user:{user.strip().lower()}", f"address:{address or '?'}"]

    def locked(self, user: str, address: str | None) -> str | None:
        """What is locked out (``user:…`` or ``address:…``), or None: the attempt may be checked."""
        now = self.clock()
        with self._lock:
            for key in self._keys(user, address):
                until = self._locked_until.get(key)
                if until is not None and until > now:
                    return key
                if until is not None:  # the lockout is over: start afresh
                    del self._locked_until[key]
                    self._failures.pop(key, None)
        return None

    def failed(self, user: str, address: str | None) -> str | None:
        """Count a failure; returns what it has just locked out, if it did."""
        now = self.clock()
        newly = None
        with self._lock:
            for key in self._keys(user, address):
                times = self._failures.setdefault(key, deque())
                times.append(now)
                while times and times[0] <= now - self.window:
                    times.popleft()
                if len(times) >= self.max_failures and key not in self._locked_until:
                    self._locked_until[key] = now + self.lockout
                    newly = newly or key
            self._prune(now)
        return newly

    def succeeded(self, user: str) -> None:
        """A right password: the user's own count starts again (the address's does not)."""
        with self._lock:
            self._failures.pop(self._keys(user, None)[0], None)

    def _prune(self, now: float) -> None:
        """Drop counters nobody has touched within the window (a flood of names does not grow memory forever)."""
        if len(self._failures) < 10_000:
            return
        for key in [k for k, t in self._failures.items() if not t or t[-1] <= now - self.window]:
            del self._failures[key]

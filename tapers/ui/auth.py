"""Who may use the panel: only the person who started it.

The server listens on 127.0.0.1 only and serves only connections of the user who started
it (see connections.peer_uid): browsers send the cookie to every port of 127.0.0.1, so
another user's service could get it. It prints a URL with a random token. Opening it
trades the token for a session cookie (HttpOnly, SameSite=Strict). Every request must
name this server in its Host header (a page elsewhere that points its own name at
127.0.0.1 is refused), and every request that changes something must be a POST from
this origin (Origin, else Referer) carrying the session's CSRF token.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Mapping

COOKIE = "tapers_ui"
CSRF_HEADER = "X-Tapers-CSRF"


class Guard:
    def __init__(self, port: int, token: str | None = None) -> None:
        self.port = port
        self.token = token or secrets.token_urlsafe(24)
        self._sessions: dict[str, str] = {}  # session id -> its CSRF token
        self._scripts = self._new_session()  # the session of requests that carry the token itself

    @property
    def origins(self) -> tuple[str, ...]:
        return (f"http://127.0.0.1:{self.port}", f"http://localhost:{self.port}")

    def url(self) -> str:
        return f"{self.origins[0]}/?token={self.token}"

    def host_ok(self, host: str | None) -> bool:
        return host in (f"127.0.0.1:{self.port}", f"localhost:{self.port}")

    def trade(self, token: str | None) -> str | None:
        """A new session for the right token (None otherwise)."""
        if token is None or not _same(token, self.token):
            return None
        return self._new_session()

    def session(self, headers: Mapping[str, str]) -> str | None:
        """The request's session: its cookie, or `Authorization: Bearer <token>` (scripts)."""
        auth = headers.get("Authorization", "")
        if auth.startswith("Bearer ") and _same(auth[7:], self.token):
            return self._scripts
        for part in headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and value in self._sessions:
                return value
        return None

    def csrf(self, session: str) -> str:
        return self._sessions[session]

    def change_allowed(self, session: str, headers: Mapping[str, str], form_csrf: str | None) -> str | None:
        """Why a state-changing request is refused, or None when it may go ahead."""
        origin = headers.get("Origin")
        referer = headers.get("Referer")
        if origin is not None:
            if origin not in self.origins:
                return f"requests from {origin} are refused"
        elif referer is None or not any(referer.startswith(o + "/") for o in self.origins):
            return "a change must come from the panel's own page (no Origin or Referer of this server)"
        given = headers.get(CSRF_HEADER) or form_csrf or ""
        if not _same(given, self._sessions[session]):
            return "missing or wrong CSRF token: reload the page"
        return None

    def _new_session(self) -> str:
        session = secrets.token_urlsafe(24)
        self._sessions[session] = secrets.token_urlsafe(24)
        return session


def _same(given: str, secret: str) -> bool:
    """A constant-time comparison that takes any text a request may carry (compare_digest
    refuses str with characters beyond ASCII)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), secret.encode())

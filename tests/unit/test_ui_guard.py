"""The panel's gatekeeper: token, sessions, Host, Origin and CSRF rules."""

from __future__ import annotations

from tapers.ui.auth import COOKIE, CSRF_HEADER, Guard


def session_of(guard: Guard) -> tuple[str, dict[str, str]]:
    session = guard.trade(guard.token)
    assert session is not None
    return session, {"Cookie": f"other=1; {COOKIE}={session}"}


def test_only_the_printed_token_opens_a_session() -> None:
    guard = Guard(8419)
    assert guard.url() == f"http://127.0.0.1:8419/?token={guard.token}"
    assert guard.trade("wrong") is None and guard.trade(None) is None
    session, cookie = session_of(guard)
    assert guard.session(cookie) == session
    assert guard.session({"Cookie": f"{COOKIE}=made-up"}) is None
    assert guard.session({}) is None
    assert guard.session({"Authorization": f"Bearer {guard.token}"}) is not None
    assert guard.session({"Authorization": "Bearer nope"}) is None
    assert Guard(8419).trade(guard.token) is None, "each panel has its own token"


def test_only_this_servers_names_are_answered() -> None:
    guard = Guard(8419)
    assert guard.host_ok("127.0.0.1:8419") and guard.host_ok("localhost:8419")
    for host in (None, "127.0.0.1", "localhost:80", "evil.example:8419", "127.0.0.1:8419.evil.example"):
        assert not guard.host_ok(host), host


def test_a_change_needs_this_origin_and_the_sessions_csrf_token() -> None:
    guard = Guard(8419)
    session, _ = session_of(guard)
    other, _ = session_of(guard)
    csrf = guard.csrf(session)
    origin = {"Origin": "http://127.0.0.1:8419"}
    assert guard.change_allowed(session, origin, csrf) is None
    assert guard.change_allowed(session, {**origin, CSRF_HEADER: csrf}, None) is None
    assert guard.change_allowed(session, {"Origin": "http://localhost:8419"}, csrf) is None
    assert guard.change_allowed(session, {"Referer": "http://127.0.0.1:8419/jobs/3"}, csrf) is None
    assert "refused" in guard.change_allowed(session, {"Origin": "http://evil.example"}, csrf)
    assert "refused" in guard.change_allowed(session, {"Origin": "null"}, csrf)
    assert "Origin or Referer" in guard.change_allowed(session, {}, csrf)
    assert "Origin or Referer" in guard.change_allowed(session, {"Referer": "http://127.0.0.1:8419.evil/"}, csrf)
    assert "CSRF" in guard.change_allowed(session, origin, None)
    assert "CSRF" in guard.change_allowed(session, origin, guard.csrf(other)), "a token is its session's only"

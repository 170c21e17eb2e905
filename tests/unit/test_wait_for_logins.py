"""`up` waits for sshd's banner and for the guest to accept logins, and logs in only when
the backend can't tell, or the project key was just authorized again."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapers.errors import SshError
from tapers.ssh import session
from tapers.ssh.config import SshTarget

TARGET = SshTarget("web", "tapers-p-web", "10.97.0.2", "tapers", "ssh-ed25519 AAAA")


@pytest.fixture
def logins(monkeypatch) -> list[str]:
    made: list[str] = []
    monkeypatch.setattr(session, "wait_for_banner", lambda *args: made.append("banner"))

    class Client:
        def close(self) -> None:
            made.append("login")

    monkeypatch.setattr(session, "connect", lambda *args, **kwargs: Client())
    return made


def test_the_guest_is_waited_for_until_it_accepts_logins(logins) -> None:
    answers = iter([True, True, False])
    session.wait_for_logins(TARGET, Path("key"), 5, lambda: next(answers))
    assert logins == ["banner"]  # no login: the guest said, from the host


@pytest.mark.parametrize("refused, log_in", [(None, False), (False, True)])
def test_a_login_when_the_backend_cant_tell_or_the_key_was_authorized_again(logins, refused, log_in) -> None:
    session.wait_for_logins(TARGET, Path("key"), 5, lambda: refused, log_in=log_in)
    assert logins == ["banner", "login"]


def test_a_guest_that_never_accepts_logins_is_an_error_saying_so(logins) -> None:
    with pytest.raises(SshError, match="still refuses logins after 0 s"):
        session.wait_for_logins(TARGET, Path("key"), 0.05, lambda: True)

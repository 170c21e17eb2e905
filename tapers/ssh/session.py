"""SSH sessions with paramiko: pinned host keys, retries only for transient failures.

paramiko is imported here only, when a command really talks to a machine.
"""

from __future__ import annotations

import base64
import io
import os
import select
import socket
import time
from pathlib import Path
from typing import IO, Any, BinaryIO, Callable

from tapers.errors import HostKeyMismatch, SshError
from tapers.ssh.config import SshTarget

POLL = 0.05


def wait_for_banner(address: str, timeout: float, what: str, port: int = 22) -> None:
    """Wait until sshd at `address` sends its banner (cheap: no SSH handshake)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            with socket.create_connection((address, port), timeout=1.0) as sock:
                sock.settimeout(max(0.2, min(2.0, deadline - time.monotonic())))
                if sock.recv(8).startswith(b"SSH-"):
                    return
                last = "it answered without an SSH banner"
        except OSError as exc:
            last = exc.strerror or str(exc)
        if time.monotonic() >= deadline:
            raise SshError(
                f"{what}: sshd at {address}:{port} did not answer within {timeout:.0f} s (last: {last})",
                hint="is the machine running? `tapers status`; its boot log: `lxc-attach -n CONTAINER -- journalctl -b`",
            )
        time.sleep(POLL)


def wait_for_logins(target: SshTarget, identity: Path, timeout: float, refused: Callable[[], bool | None],
                    log_in: bool = False) -> None:
    """Wait until a login would work: sshd's banner, and the guest past the early boot in
    which pam_nologin refuses logins (`refused`, asked of the backend). Where the backend
    can't tell, or `log_in` (the key was just authorized again), log in once; else the keys
    need no check: tapers wrote both into the machine, and the first login (`tapers ssh`,
    a step) checks the pinned host key."""
    from tapers.profile import phase

    deadline = time.monotonic() + timeout
    with phase("wait for the SSH banner", target.machine):
        wait_for_banner(target.address, timeout, f"machine `{target.machine}`")
    with phase("wait until it accepts logins", target.machine):
        while (booting := refused()) and time.monotonic() < deadline:
            time.sleep(POLL / 5)
    if booting:
        raise SshError(f"machine `{target.machine}` still refuses logins after {timeout:.0f} s (its /run/nologin or "
                       "/etc/nologin is there: it has not finished booting)",
                       hint=f"see what it waits for: tapers exec {target.machine} -- systemctl list-jobs")
    if booting is None or log_in:
        with phase("log in over SSH", target.machine):
            connect(target, identity, timeout=max(1.0, deadline - time.monotonic())).close()


class ConnectionLost(SshError):
    """The connection dropped (the machine rebooted, or went away).

    `started`: whether the command had started on the machine when it dropped."""

    def __init__(self, message: str, started: bool) -> None:
        super().__init__(message)
        self.started = started


class Session:
    def __init__(self, client: Any, target: SshTarget) -> None:
        self._client = client
        self._sftp: Any = None
        self.target = target

    def run(self, command: str, stdout: IO[bytes], stderr: IO[bytes], stdin: IO[bytes] | None = None) -> int:
        """Run `command`, stream its output as it comes, return its exit code.

        Raises ConnectionLost when the connection drops before the command's exit code arrives."""
        channel = self._open(lambda channel: channel.exec_command(command))
        return self._pump(channel, stdin.fileno() if stdin is not None else None, stdout, stderr)

    def shell(self, stdin: int, stdout: IO[bytes], stderr: IO[bytes]) -> int:
        """An interactive login shell, as `ssh HOST` gives one; its exit code.

        When `stdin` is a terminal the shell gets one of the same size and TERM, the local
        terminal is raw meanwhile (Ctrl-C, Ctrl-Z and the arrows are the machine's) and is put
        back after, and a change of window size reaches the machine. Otherwise the shell reads
        `stdin` as a script, as `ssh HOST < script` does."""
        if not os.isatty(stdin):
            return self._pump(self._open(lambda channel: channel.invoke_shell()), stdin, stdout, stderr)
        import signal
        import termios
        import tty

        def size() -> tuple[int, int]:
            columns, lines = os.get_terminal_size(stdin)
            return columns, lines

        def open_shell(channel: Any) -> None:
            columns, lines = size()
            channel.get_pty(term=os.environ.get("TERM", "vt100"), width=columns, height=lines)
            channel.invoke_shell()

        channel = self._open(open_shell)
        saved = termios.tcgetattr(stdin)
        previous = signal.signal(signal.SIGWINCH, lambda signum, frame: channel.resize_pty(*size()))
        try:
            tty.setraw(stdin, termios.TCSANOW)
            return self._pump(channel, stdin, stdout, stderr)
        finally:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
            signal.signal(signal.SIGWINCH, previous)

    def _open(self, start: Callable[[Any], None]) -> Any:
        """A new channel of the session, `start`ed (a command, a shell)."""
        try:
            channel = self._client.get_transport().open_session()
            start(channel)
        except Exception as exc:  # OSError, EOFError, paramiko.SSHException (imported lazily)
            raise self._lost(exc, started=False) from None
        return channel

    def _pump(self, channel: Any, stdin_fd: int | None, stdout: IO[bytes], stderr: IO[bytes]) -> int:
        """Pass `stdin_fd` to the channel and its output to ours until it ends; its exit code."""
        if stdin_fd is None:
            channel.shutdown_write()
        try:
            while True:
                watched = [channel] if stdin_fd is None else [channel, stdin_fd]
                try:
                    readable, _, _ = select.select(watched, [], [], 0.5)
                except InterruptedError:  # a signal (a window change): look again
                    continue
                if stdin_fd is not None and stdin_fd in readable:
                    data = os.read(stdin_fd, 65536)
                    if data:
                        channel.sendall(data)
                    else:
                        channel.shutdown_write()
                        stdin_fd = None
                if channel in readable or channel.recv_ready() or channel.recv_stderr_ready():
                    _drain(channel, stdout, stderr)
                # Done when the exit code and the end of the output have both come: sshd
                # may send the exit code before the last output it still had in its pipes.
                finished = channel.exit_status_ready() and (channel.eof_received or channel.closed)
                if finished and not channel.recv_ready() and not channel.recv_stderr_ready():
                    _drain(channel, stdout, stderr)
                    break
                if channel.closed and not channel.exit_status_ready():
                    break
            status = channel.recv_exit_status() if channel.exit_status_ready() else -1
        except (OSError, EOFError) as exc:
            raise self._lost(exc, started=True) from None
        finally:
            channel.close()
        if status < 0:
            raise self._lost(None, started=True)
        return status

    def capture(self, command: str) -> tuple[int, str]:
        """Run `command` quietly; return its exit code and its stdout."""
        out, err = io.BytesIO(), io.BytesIO()
        code = self.run(command, out, err)
        return code, out.getvalue().decode(errors="replace")

    def put(self, source: BinaryIO, remote: str, mode: int) -> None:
        """Upload what `source` reads over SFTP and give it `mode`."""
        self._sftp_call("upload to", remote, lambda sftp: (sftp.putfo(source, remote), sftp.chmod(remote, mode)))

    def put_bytes(self, data: bytes, remote: str, mode: int) -> None:
        """Write `data` to a new file over SFTP and give it `mode`."""

        def write(sftp: Any) -> None:
            with sftp.open(remote, "wb") as handle:
                handle.write(data)
            sftp.chmod(remote, mode)

        self._sftp_call("upload to", remote, write)

    def mkdir(self, remote: str, mode: int = 0o755) -> None:
        self._sftp_call("create", remote, lambda sftp: sftp.mkdir(remote, mode))

    def sftp(self) -> Any:
        """The session's SFTP client (paramiko's; opened once)."""
        if self._sftp is None:
            self._sftp = self._client.open_sftp()
        return self._sftp

    def _sftp_call(self, what: str, remote: str, call: Any) -> None:
        try:
            call(self.sftp())
        except OSError as exc:
            raise SshError(f"could not {what} {self.target.machine}:{remote}: {exc}") from None
        except Exception as exc:  # paramiko.SSHException: the connection went away
            transport = self._client.get_transport()
            if transport is None or not transport.is_active() or isinstance(exc, EOFError):
                raise self._lost(exc, started=False) from None
            raise SshError(f"could not {what} {self.target.machine}:{remote}: {exc}") from None

    def _lost(self, exc: BaseException | None, started: bool) -> ConnectionLost:
        why = f": {exc}" if exc else ""
        return ConnectionLost(f"the SSH connection to `{self.target.machine}` was lost{why}", started)

    def close(self) -> None:
        if self._sftp is not None:
            try:
                self._sftp.close()
            except Exception:
                pass
        self._client.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drain(channel: Any, stdout: IO[bytes], stderr: IO[bytes]) -> None:
    while channel.recv_ready():
        stdout.write(channel.recv(65536))
        stdout.flush()
    while channel.recv_stderr_ready():
        stderr.write(channel.recv_stderr(65536))
        stderr.flush()


def connect(target: SshTarget, identity: Path, timeout: float = 30.0) -> Session:
    """Log in as the machine's user; retry while sshd comes up, fail fast otherwise."""
    import paramiko

    try:
        pkey = paramiko.Ed25519Key.from_private_key_file(str(identity))
    except (OSError, paramiko.SSHException) as exc:
        raise SshError(f"cannot read the project key {identity}: {exc}") from None
    key_type, key_data = target.host_key.split()[:2]
    pinned = paramiko.PKey.from_type_string(key_type, base64.b64decode(key_data))
    deadline = time.monotonic() + timeout
    while True:
        client = paramiko.SSHClient()
        client.get_host_keys().add(target.address, key_type, pinned)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                target.address,
                port=22,
                username=target.user,
                pkey=pkey,
                allow_agent=False,
                look_for_keys=False,
                timeout=5,
                banner_timeout=10,
                auth_timeout=10,
            )
            return Session(client, target)
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyMismatch(
                f"machine `{target.machine}` ({target.address}) presented a host key other than the one "
                f"tapers pinned when it created it: got {exc.key.get_name()} {exc.key.get_base64()[:16]}..., "
                f"expected {key_data[:16]}...",
                hint="someone may be impersonating the machine, or it was changed by hand; "
                "`tapers destroy` and `tapers up` re-create it with a fresh pinned key",
            ) from None
        except paramiko.AuthenticationException:
            client.close()
            raise SshError(
                f"machine `{target.machine}` ({target.address}) refused the project key for user `{target.user}`",
                hint="`tapers up` authorizes the current project key again",
            ) from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            client.close()
            if time.monotonic() >= deadline:
                raise SshError(
                    f"could not reach machine `{target.machine}` over SSH at {target.address} within "
                    f"{timeout:.0f} s: {exc}",
                    hint="is it running? `tapers status`",
                ) from None
            time.sleep(POLL)


__all__ = ["Session", "connect", "wait_for_banner", "wait_for_logins"]

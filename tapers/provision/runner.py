"""Run provisioning steps on one machine: a Guest over SSH, live prefixed output, a log
file per run, reboots waited for, failures that name the step."""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, BinaryIO, Callable, Iterator

from tapers.backend.api import Backend
from tapers.errors import Interrupted, ProvisionError, SshError
from tapers.events import Reporter
from tapers.provision import provisioner
from tapers.provision.api import Inputs, RebootStarted, StepFailed
from tapers.ssh.config import SshTarget
from tapers.ssh.session import ConnectionLost, Session, connect, wait_for_logins
from tapers.taperfile.machine import Step

TAIL_LINES = 15
REBOOT_TIMEOUT = 120.0


class _Output:
    """Turns a byte stream into `machine | line` report lines, the log, and a tail."""

    def __init__(self, machine: str, reporter: Reporter, log: IO[str], tail: collections.deque[str]) -> None:
        self._machine, self._reporter, self._log, self._tail = machine, reporter, log, tail
        self._partial = b""

    def write(self, data: bytes) -> int:
        self._partial += data
        *lines, self._partial = self._partial.split(b"\n")
        for line in lines:
            self._emit(line)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._partial:
            self._emit(self._partial)
            self._partial = b""

    def _emit(self, raw: bytes) -> None:
        text = raw.decode(errors="replace").rstrip("\r")
        self._tail.append(text)
        try:
            self._log.write(text + "\n")
            self._log.flush()
        except ValueError:  # the guest was closed under us (Ctrl-C)
            pass
        self._reporter.line(self._machine, text)


def play_command(root: Path, work: Path, hidden: tuple[Path, ...], argv: list[str],
                 person: tuple[int, int] | None) -> list[str]:
    """`argv` run through play_ns: the play's copy `work` mounted over the project folder
    `root`, the `hidden` folders covered, as `person` (uid, gid) when given."""
    # As root for a person, -s: their HOME is in the environment, and the site folder in their
    # ~/.local, theirs to fill, must not be loaded by root's Python.
    no_user_site = ["-s"] if person else []
    become = [f"--as={person[0]}:{person[1]}"] if person else []
    # (real paths, as tapers has them: play_ns refuses a link on the way; resolving one here, the
    # copy's folder being the person's by now, would take their word for where it leads)
    return [sys.executable, "-P", *no_user_site, "-m", "tapers.provision.play_ns", *become, str(root), str(work),
            *map(str, hidden), "--", *argv]


def _remove_play_folder(folder: Path) -> None:
    """The play's private folder, gone. Under sudo what it holds is the person's by now
    (play_copy.give), so they remove that themselves: root walking a folder of theirs
    would open whatever they swap a name for (a link to /dev/watchdog, a FIFO). Root then
    removes its own folder's entries, each by name in it, without walking into any.
    (Not TemporaryDirectory: its cleanup chmods by name, following links: CVE-2023-6597.)"""
    import shutil

    from tapers import project_files

    drop, _ = project_files.as_invoker({})
    # Root's own play, a user's own, or one that failed before it was given (still 0700): no
    # one else could have changed what it holds.
    if not drop or stat.S_IMODE(os.stat(folder).st_mode) == 0o700:
        shutil.rmtree(folder, ignore_errors=True)
        return
    names = os.listdir(folder)
    if names:
        subprocess.run(["rm", "-rf", "--one-file-system", "--", *(str(folder / name) for name in names)],
                       capture_output=True, **drop)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for name in os.listdir(fd):
            with contextlib.suppress(OSError):
                if stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                    os.rmdir(name, dir_fd=fd)  # (empty by now, or left: what they keep in it is theirs)
                else:
                    os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.rmdir(folder)


class SshGuest:
    """A machine as provisioners see it (tapers.provision.api.Guest)."""

    def __init__(
        self,
        target: SshTarget,
        identity: Path,
        root: Path,
        home: str,
        inventory: Callable[[Path], Path],
        check_play: Callable[[Step, Inputs], None],
        log_path: Path,
        reporter: Reporter,
        backend: Backend,
        ssh_timeout: float = 60.0,
        hidden_from_plays: Callable[[], tuple[Path, ...]] = tuple,
    ) -> None:
        self.machine = target.machine
        self._hidden_from_plays = hidden_from_plays  # (found when a play runs: only a play needs them)
        self.target = target
        self.root = root
        self.user = target.user
        self.home = home
        self._write_inventory = inventory  # writes a play's inventory into a folder; its path
        self._check_play = check_play
        self.log_path = log_path
        self._identity = identity
        self._reporter = reporter
        self._backend = backend
        self._ssh_timeout = ssh_timeout
        self._session: Session | None = None
        self._closed = False
        self._guard = threading.Lock()  # close() may come from another thread (Ctrl-C)
        self._boot = ""
        self._log: IO[str] | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

    # -- the Guest protocol -------------------------------------------------------------

    @property
    def hidden_from_plays(self) -> tuple[Path, ...]:
        return self._hidden_from_plays()

    def run(self, command: str) -> int:
        out, err = self._outputs()
        try:
            return self._connected().run(command, out, err)  # type: ignore[arg-type]
        finally:
            out.close()
            err.close()

    def capture(self, command: str) -> tuple[int, str]:
        return self._connected().capture(command)

    def put_bytes(self, data: bytes, remote: str, mode: int) -> None:
        self._connected().put_bytes(data, remote, mode)

    def put(self, source: BinaryIO, remote: str, mode: int) -> None:
        self._connected().put(source, remote, mode)

    def mkdir(self, remote: str, mode: int = 0o755) -> None:
        self._connected().mkdir(remote, mode)

    def run_play(self, argv: list[str], work: Path, hidden: tuple[Path, ...], env: dict[str, str]) -> int:
        """Run a play's program on the host (ansible-playbook, ansible-galaxy) with its output
        in this step's, through play_ns: the play's copy `work` where the project is, the
        `hidden` folders covered. Under sudo it runs as the user who ran sudo, never as root
        (what it runs is the project's): play_ns makes its namespace as root and becomes them
        before it starts the program, so no user namespace is needed."""
        from tapers import project_files

        out, _ = self._outputs()
        drop, env = project_files.as_invoker(env)
        argv = play_command(self.root, work, hidden, argv, (drop["user"], drop["group"]) if drop else None)
        try:
            process = subprocess.Popen(argv, cwd="/", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        except OSError as exc:
            raise ProvisionError(f"cannot run {argv[0]}: {exc.strerror}") from None
        assert process.stdout is not None
        for chunk in iter(lambda: process.stdout.read1(65536), b""):  # type: ignore[union-attr]
            out.write(chunk)
        out.close()
        return process.wait()

    def check_play(self, step: Step, inputs: Inputs) -> None:
        self._check_play(step, inputs)

    @contextlib.contextmanager
    def play_folder(self) -> Iterator[tuple[Path, Path]]:
        import tempfile

        # 0700 and root's (see play_copy.give); in /tmp, not a TMPDIR sudo may have kept, which
        # could be the person's folder, where they could rename it.
        folder = Path(tempfile.mkdtemp(prefix="tapers-play-", dir="/tmp" if os.geteuid() == 0 else None)).resolve()
        try:
            yield folder, self._write_inventory(folder)
        finally:
            _remove_play_folder(folder)

    # -- lifecycle ------------------------------------------------------------------------

    def begin(self, step: Step) -> None:
        self.tail.clear()
        self._logfile().write(f"\n=== {dt.datetime.now().isoformat(timespec='seconds')} {step.label}\n")

    def wait_for_reboot(self) -> None:
        """The guest is rebooting (or rebooted): wait until it has booted again and answers SSH."""
        before = self._boot
        self._disconnect()
        if self._closed:
            raise Interrupted(f"{self.machine}: provisioning interrupted")
        deadline = time.monotonic() + REBOOT_TIMEOUT
        while True:
            now = self._backend.boot_id(self.target.container)
            if now and now != before:
                break
            if time.monotonic() > deadline:
                raise ProvisionError(
                    f"{self.machine}: the connection was lost and the machine did not boot again within "
                    f"{REBOOT_TIMEOUT:.0f} s",
                    hint=f"see `tapers status`; the log is {self.log_path}",
                )
            time.sleep(0.1)
        self._reporter.line(self.machine, "rebooted; waiting for SSH")
        self._connected()

    def reboot(self) -> None:
        self._reporter.line(self.machine, "rebooting (reboot: true)")
        self._connected()  # know the boot we start from
        self._backend.reboot(self.target.container)
        self.wait_for_reboot()

    def close(self) -> None:
        """Close for good (also from another thread: a running command loses its connection)."""
        with self._guard:
            self._closed = True
        self._disconnect()
        if self._log is not None:
            self._log.close()

    # -- helpers ---------------------------------------------------------------------------

    def _connected(self) -> Session:
        if self._session is None:
            container = self.target.container  # after a reboot: past the boot's nologin, as `up` waits
            wait_for_logins(self.target, self._identity, self._ssh_timeout,
                            lambda: self._backend.logins_refused(container))
            session = connect(self.target, self._identity, timeout=self._ssh_timeout)
            with self._guard:
                if self._closed:
                    session.close()
                    raise Interrupted(f"{self.machine}: provisioning interrupted")
                self._session = session
            self._boot = self._backend.boot_id(self.target.container)
        return self._session

    def _disconnect(self) -> None:
        with self._guard:
            session, self._session = self._session, None
        if session is not None:
            session.close()

    def _logfile(self) -> IO[str]:
        if self._log is None:
            from tapers import project_files

            project_files.check_dir(self.log_path.parent.parent, create=True)
            project_files.check_dir(self.log_path.parent, create=True)
            self._log = os.fdopen(project_files.open_file(self.log_path, os.O_WRONLY | os.O_APPEND), "a")
        return self._log

    def _outputs(self) -> tuple[_Output, _Output]:
        log = self._logfile()
        return (
            _Output(self.machine, self._reporter, log, self.tail),
            _Output(self.machine, self._reporter, log, self.tail),
        )


def run_step(step: Step, guest: SshGuest, record: Callable[[], None]) -> None:
    """Run one step; on success call `record` (which stores its fingerprint).

    A connection lost while the step runs means the guest rebooted: wait for it and go on.
    Lost before the step could start (the previous step's reboot was under way), wait for
    the guest and start the step again."""
    for attempt in range(3):
        guest.begin(step)
        try:
            provisioner(step.kind).run(step, guest)
        except StepFailed as failure:
            raise _failed(step, guest, failure.why) from None
        except RebootStarted:
            guest.wait_for_reboot()
        except ConnectionLost as lost:
            guest.wait_for_reboot()
            if not lost.started and attempt < 2:
                continue
        except SshError as exc:
            raise _failed(step, guest, f"could not be run: {exc.message}") from None
        break
    if step.reboot:
        guest.reboot()
    record()


def last_lines(guest: SshGuest) -> str:
    """`; its last lines:` and the guest's last output lines, for a failure's message ("": none)."""
    tail = "".join(f"\n  {guest.machine} | {line}" for line in guest.tail)
    return f"; its last lines:{tail}" if tail else ""


def _failed(step: Step, guest: SshGuest, why: str) -> ProvisionError:
    return ProvisionError(
        f"{guest.machine}: {step.label} {why}{last_lines(guest)}",
        hint=f"full output in {guest.log_path}; the machine is left running for you to look "
        f"(`tapers ssh {guest.machine}`); the next `tapers up` retries from this step",
    )


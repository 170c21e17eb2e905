"""What every backend shares, written once: the contract of api.py kept in one place.

`BackendBase` owns the state machine (starting a running container, stopping a stopped
or missing one and destroying a missing one do nothing; reconfiguring and restoring need
a stopped container; creating over an existing one is refused) and turns every error of
the engine's library (OSError, a failed subprocess, pylxd's) into a `BackendError` naming
the container and the operation. A backend implements the `_`-methods below, each of which
may assume the state it needs was checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

from tapers.backend.api import (
    ContainerInfo,
    GuestFile,
    LeaveOut,
    Limits,
    MachineSpec,
    Mount,
    Networking,
    NetworkConfig,
    Snapshot,
    State,
    Usage,
)
from tapers.errors import BackendError
from tapers.record import Record

ACTIVE = (State.RUNNING, State.FROZEN)


class BackendBase:
    name: str = ""
    places_machines: bool = False
    interactive_run: bool = True  # `run(terminal=True)` is interactive (stdin included)
    network: Networking

    @property
    def library_errors(self) -> tuple[type[BaseException], ...]:
        """What the engine's library raises when the engine fails (not when tapers has a bug)."""
        import subprocess  # (read only when something failed: `status` loads no subprocess)

        return (OSError, subprocess.SubprocessError)

    # -- the contract ------------------------------------------------------------------------

    def list(self, prefix: str = "") -> list[ContainerInfo]:
        with self._translated("list the containers", prefix + "*"):
            return self._list(prefix)

    def inspect(self, container: str) -> ContainerInfo | None:
        with self._translated("read it", container):
            return self._inspect(container)

    def create(self, spec: MachineSpec, record: Record) -> None:
        with self._translated("create it", spec.container):
            if self._state(spec.container) is not None:
                raise BackendError(f"cannot create container `{spec.container}`: it already exists")
            if spec.layers and not self.caches_layers():
                raise BackendError(f"cannot create container `{spec.container}` from cached layers: the {self.name} "
                                   "backend can't stand machines on them here (no overlayfs?)")
            self._create(spec, record)

    def save_record(self, container: str, record: Record) -> None:
        with self._translated("save its record", container):
            self._require(container, "save the record of")
            self._save_record(container, record)

    def start(self, container: str) -> None:
        with self._translated("start it", container):
            state = self._require(container, "start")
            if state is State.FROZEN:
                self._unfreeze(container)
            elif state is not State.RUNNING:
                self._start(container)

    def stop(self, container: str, timeout: float) -> bool:
        with self._translated("stop it", container):
            state = self._state(container)
            clean = True
            if state is not None and state is not State.STOPPED:
                thawed = state is not State.FROZEN or self._thawed(container)
                clean = thawed and self._shutdown(container, timeout)
                if not clean:
                    self._kill(container)
            self._release(container)
            return clean

    def writable_sources(self, container: str) -> list[Path]:
        with self._translated("read its synced folders", container):
            if self._state(container) is None:
                return []
            return [Path(m["source"]) for m in self._mount_records(container) if not m.get("readonly")]

    def freeze(self, container: str) -> None:
        with self._translated("freeze it", container):
            if self._require(container, "freeze") is State.RUNNING:
                self._freeze(container)

    def unfreeze(self, container: str) -> None:
        with self._translated("unfreeze it", container):
            if self._require(container, "unfreeze") is State.FROZEN:
                self._unfreeze(container)

    def set_limits(self, container: str, limits: Limits) -> None:
        with self._translated("change its limits", container):
            state = self._require(container, "change the limits of")
            self._set_limits(container, limits, state in ACTIVE)

    def reconfigure(
        self,
        container: str,
        hostname: str,
        private: tuple[NetworkConfig, ...],
        mounts: tuple[Mount, ...],
        files: tuple[GuestFile, ...],
        nesting: bool = False,
        raw: dict[str, Any] | None = None,
    ) -> None:
        with self._translated("reconfigure it", container):
            self._require_stopped(container, "reconfigure", "reconfigured")
            self._reconfigure(container, hostname, private, mounts, files, nesting, raw)

    @contextmanager
    def root_view(self, container: str) -> Iterator[Path]:
        with ExitStack() as stack:
            with self._translated("read its files", container):
                self._require(container, "read the files of")
                view = stack.enter_context(self._root_view(container))
            yield view

    def files_command(self, argv: list[str]) -> list[str]:
        """`argv` (which reads a root_view's folder) as a command that may read it."""
        return argv

    def usage(self, container: str) -> Usage | None:
        """Of a running or suspended container (None otherwise)."""
        with self._translated("read its usage", container):
            return self._usage(container) if self._state(container) in ACTIVE else None

    def snapshot_save(self, container: str, name: str) -> None:
        with self._translated(f"save snapshot `{name}`", container):
            self._require(container, "snapshot")
            if name in self._snapshot_names(container):
                raise BackendError(f"machine `{container}` already has a snapshot `{name}`")
            self._snapshot_save(container, name)

    def snapshot_restore(self, container: str, name: str) -> None:
        with self._translated(f"restore snapshot `{name}`", container):
            self._require_stopped(container, "restore a snapshot of", "restored to a snapshot")
            self._require_snapshot(container, name)
            self._snapshot_restore(container, name)

    def snapshot_list(self, container: str) -> list[Snapshot]:
        with self._translated("list its snapshots", container):
            self._require(container, "list the snapshots of")
            return self._snapshot_list(container)

    def snapshot_delete(self, container: str, name: str) -> None:
        with self._translated(f"delete snapshot `{name}`", container):
            self._require(container, "delete a snapshot of")
            self._require_snapshot(container, name)
            self._snapshot_delete(container, name)

    def destroy(self, container: str) -> None:
        with self._translated("destroy it", container):
            state = self._state(container)
            if state is None:
                self._remove_leftovers(container)
                return
            if state is State.FROZEN:
                self._thawed(container)  # or killed frozen: destroying goes on either way
            if state is not State.STOPPED:
                self._kill(container)
            self._release(container)
            self._delete(container)

    def boot_id(self, container: str) -> str:
        with self._translated("read its boot id", container):
            return self._boot_id(container) if self._state(container) is State.RUNNING else ""

    def logins_refused(self, container: str) -> bool | None:
        with self._translated("see whether it accepts logins", container):
            return self._logins_refused(container)

    def reboot(self, container: str) -> None:
        with self._translated("reboot it", container):
            self._require_running(container, "reboot", "rebooted")
            self._reboot(container)

    def run(self, container: str, argv: list[str], env: dict[str, str] | None = None, terminal: bool = False) -> int:
        with self._translated(f"run {argv[0] if argv else 'a command'} in it", container):
            self._require_running(container, "run a command in", "given a command")
            return self._run(container, argv, env or {}, terminal)

    def console(self, container: str) -> None:
        with self._translated("attach to its console", container):
            self._require_running(container, "attach to the console of", "attached to")
            self._console(container)

    def copy_mode(self) -> str:
        return "overlay"

    def caches_layers(self) -> bool:
        return False

    def layer_scope(self) -> str:
        return self.name

    def drop_layer(self, key: str) -> None:
        """Nothing but the cache's folder (liblxc)."""

    def remove_files(self, folder: Path) -> None:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)

    def save_layer(self, container: str, target: Path, leave_out: LeaveOut, limit: int,
                   previous: Path | None = None) -> int:
        with self._translated("keep its provisioned files in the cache", container):
            self._require(container, "keep the files of")
            return self._save_layer(container, target, leave_out, limit, previous)

    # -- the guards ------------------------------------------------------------------------

    @contextmanager
    def _translated(self, operation: str, container: str) -> Iterator[None]:
        """The one place a library's error becomes a BackendError."""
        try:
            yield
        except BackendError:
            raise
        except self.library_errors as exc:
            raise BackendError(f"container `{container}`: could not {operation}: {_said(exc)}") from None

    def _require(self, container: str, operation: str) -> State:
        state = self._state(container)
        if state is None:
            raise BackendError(f"cannot {operation} container `{container}`: it does not exist")
        return state

    def _require_stopped(self, container: str, operation: str, what: str) -> None:
        state = self._require(container, operation)
        if state is not State.STOPPED:
            raise BackendError(f"container `{container}` must be stopped to be {what} (it is {state})")

    def _require_running(self, container: str, operation: str, what: str) -> None:
        state = self._require(container, operation)
        if state is not State.RUNNING:
            raise BackendError(f"container `{container}` must be running to be {what} (it is {state})")

    def _thawed(self, container: str) -> bool:
        """Unfreeze before a shutdown; False when it would not thaw (it is then killed)."""
        try:
            self._unfreeze(container)
        except BackendError:
            return False
        return True

    def _require_snapshot(self, container: str, name: str) -> None:
        if name not in self._snapshot_names(container):
            raise BackendError(f"machine `{container}` has no snapshot `{name}`")

    def _snapshot_names(self, container: str) -> set[str]:
        return {snapshot.name for snapshot in self._snapshot_list(container)}

    # -- what each backend implements ---------------------------------------------------------

    def _state(self, container: str) -> State | None:
        """The container's state; None when it does not exist."""
        raise NotImplementedError

    def _list(self, prefix: str) -> list[ContainerInfo]:
        raise NotImplementedError

    def _inspect(self, container: str) -> ContainerInfo | None:
        raise NotImplementedError

    def _create(self, spec: MachineSpec, record: Record) -> None:
        raise NotImplementedError

    def _save_record(self, container: str, record: Record) -> None:
        raise NotImplementedError

    def _mount_records(self, container: str) -> list[dict[str, Any]]:
        """The synced folders as kept with the container (staging.as_records)."""
        raise NotImplementedError

    def _start(self, container: str) -> None:
        """Boot a stopped container."""
        raise NotImplementedError

    def _shutdown(self, container: str, timeout: float) -> bool:
        """Ask a running container to shut down; True when it did within `timeout` seconds."""
        raise NotImplementedError

    def _kill(self, container: str) -> None:
        """Stop it at once."""
        raise NotImplementedError

    def _release(self, container: str) -> None:
        """After it stopped (or vanished): what its start set up on the host goes."""

    def _freeze(self, container: str) -> None:
        raise NotImplementedError

    def _unfreeze(self, container: str) -> None:
        raise NotImplementedError

    def _set_limits(self, container: str, limits: Limits, running: bool) -> None:
        raise NotImplementedError

    def _reconfigure(self, container: str, hostname: str, private: tuple[NetworkConfig, ...],
                     mounts: tuple[Mount, ...], files: tuple[GuestFile, ...], nesting: bool,
                     raw: dict[str, Any] | None) -> None:
        raise NotImplementedError

    def _root_view(self, container: str) -> AbstractContextManager[Path]:
        raise NotImplementedError

    def _usage(self, container: str) -> Usage | None:
        raise NotImplementedError

    def _snapshot_save(self, container: str, name: str) -> None:
        raise NotImplementedError

    def _snapshot_restore(self, container: str, name: str) -> None:
        raise NotImplementedError

    def _snapshot_list(self, container: str) -> list[Snapshot]:
        raise NotImplementedError

    def _snapshot_delete(self, container: str, name: str) -> None:
        raise NotImplementedError

    def _delete(self, container: str) -> None:
        """Delete a stopped container."""
        raise NotImplementedError

    def _remove_leftovers(self, container: str) -> None:
        """The container does not exist: remove what an interrupted create may have left."""

    def _save_layer(self, container: str, target: Path, leave_out: LeaveOut, limit: int,
                    previous: Path | None) -> int:
        raise BackendError(f"the {self.name} backend can't cache provisioned machines")

    def _boot_id(self, container: str) -> str:
        raise NotImplementedError

    def _reboot(self, container: str) -> None:
        raise NotImplementedError

    def _logins_refused(self, container: str) -> bool | None:
        return None

    def _run(self, container: str, argv: list[str], env: dict[str, str], terminal: bool) -> int:
        raise NotImplementedError

    def _console(self, container: str) -> None:
        raise BackendError(f"container `{container}`: the {self.name} backend has no console access")


def _said(exc: BaseException) -> str:
    """What a library error says, without Python's decoration."""
    import subprocess

    if isinstance(exc, subprocess.CalledProcessError):
        detail = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        return (detail or "").strip() or f"{exc.cmd[0] if exc.cmd else 'a command'} exited {exc.returncode}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
    return str(exc) or type(exc).__name__

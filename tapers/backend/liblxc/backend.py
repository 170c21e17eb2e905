"""The liblxc backend: python-lxc on this host.

Machines are copy-on-write overlay clones of a box's root filesystem: the box is
the read-only lower layer and each machine writes to its own `delta0/` folder.
Every `False` the bindings return becomes a `BackendError` naming the container
and the operation; the state rules and the other errors are BackendBase's (base.py).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapers import paths, sinks
from tapers.backend import cgroups, lxc_config, staging
from tapers.backend.base import BackendBase
from tapers.backend.liblxc import unprivileged
from tapers.backend.api import (
    ContainerInfo,
    Record,
    container_info,
    GuestFile,
    LeaveOut,
    MACHINE_IDS,
    Limits,
    MachineSpec,
    Mount,
    NetworkConfig,
    Snapshot,
    State,
    Usage,
)
from tapers.errors import BackendError, TapersError

if TYPE_CHECKING:
    import lxc

    from tapers.backend.liblxc.networking import HostNetworking, UserNetworking

_STATES = {
    "RUNNING": State.RUNNING,
    "STOPPED": State.STOPPED,
    "FROZEN": State.FROZEN,
}

RECORD_NAME = "tapers.json"
UPPER_DIR = "delta0"
COPY_DIR = "rootfs"
VIEWS_DIR = "views"  # in the run folder: where package mounts a machine's files to read them


def overlay_supported() -> bool:
    try:
        return "\toverlay\n" in Path("/proc/filesystems").read_text()
    except OSError:
        return False


class LiblxcBackend(BackendBase):
    name = "liblxc"
    places_machines = False  # one host

    def __init__(self, lxcpath: Path | None = None) -> None:
        self.lxcpath = lxcpath or paths.lxc_path()
        self.as_user = paths.as_user()  # a normal user's machines: see userns.py
        # root_view's folder -> (writable layer, what it stands on: its layers and the box, as a lowerdir)
        self._user_views: dict[Path, tuple[Path, Path]] = {}
        self._layers_seen: dict[str, Any] = {}  # container -> what its last saved layer copied (layer_copy.Seen)
        self._monitors_exiting: set[str] = set()  # containers whose LXC monitor's cgroup was still in use at release

    @functools.cached_property
    def network(self) -> HostNetworking | UserNetworking:  # type: ignore[override]
        """Made on first use: `status` never needs it."""
        from tapers.backend.liblxc.networking import HostNetworking, UserNetworking

        return UserNetworking() if self.as_user else HostNetworking()

    # -- reading ---------------------------------------------------------------------

    def _container(self, name: str) -> lxc.Container:
        import lxc

        return lxc.Container(name, str(self.lxcpath))

    def _state(self, container: str) -> State | None:
        import _lxc  # (python-lxc's own C module, which its `lxc` wraps: see _names)

        c = _lxc.Container(container, str(self.lxcpath))
        return _STATES.get(c.state, State.BUSY) if c.defined else None

    def _names(self) -> tuple[str, ...]:
        """The containers in this backend's folder. Read with python-lxc's C module itself:
        its `lxc` module around it loads subprocess and more first (about a sixth of a
        `tapers status`), for attaching and networks that reading states needs none of."""
        import _lxc

        try:
            return _lxc.list_containers(active=True, defined=True, config_path=str(self.lxcpath))
        except ValueError:  # (what `lxc.list_containers` makes an empty list of)
            return ()

    def _list(self, prefix: str) -> list[ContainerInfo]:
        if not self.lxcpath.is_dir():
            return []
        return [info for name in sorted(self._names()) if name.startswith(prefix) if (info := self._inspect(name))]

    def _inspect(self, container: str) -> ContainerInfo | None:
        state = self._state(container)
        if state is None:
            return None
        try:
            text = self._record_text(container)
        except OSError as exc:  # one unreadable record must not hide every other container
            return ContainerInfo(container, state, problem=f"its tapers record can't be read: {exc.strerror}")
        return container_info(container, state, text)

    def _record_text(self, container: str) -> bytes | None:
        try:
            return (self.lxcpath / container / RECORD_NAME).read_bytes()
        except FileNotFoundError:
            return None

    def copy_mode(self) -> str:
        if os.environ.get("TAPERS_COPY_MODE") == "copy" or not overlay_supported():
            return "copy"
        return "overlay"

    # -- writing ---------------------------------------------------------------------

    def _save_record(self, container: str, record: Record) -> None:
        self._save_record_text(container, record.to_json().encode())

    def _save_record_text(self, container: str, text: bytes) -> None:
        target = self.lxcpath / container / RECORD_NAME
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(text)
        os.replace(tmp, target)

    def _mount_records(self, container: str) -> list[dict[str, Any]]:
        return _mounts_of(self.lxcpath / container)

    def _create(self, spec: MachineSpec, record: Record) -> None:
        folder = self.lxcpath / spec.container
        if folder.exists():  # left over by an interrupted create: nothing defined in it
            self._remove_tree(folder)
        if self.as_user:
            self._create_as_user(spec, record, folder)
            return
        shift = None
        if not spec.privileged:
            unprivileged.ensure_subids()
            shift = self._free_id_range()
        folder.mkdir(parents=True, mode=0o700)  # an unprivileged machine's root may pass: see unprivileged.prepare
        self._save_record_text(spec.container, record.to_json().encode())
        lower = spec.rootfs.resolve()  # the box's files themselves, not a name's link to them
        if self.copy_mode() == "overlay":
            writable = folder / UPPER_DIR
            writable.mkdir(mode=0o755)
            below = [*(layer.resolve() for layer in spec.layers), lower]  # cached layers over the box
            seen = below
            if shift is not None:
                seen = unprivileged.prepare(folder, spec.container, lower, shift, overlay=True, layers=below[:-1])
            rootfs = _overlay_rootfs(folder, seen, writable)
        else:
            writable = folder / COPY_DIR
            _copy_tree(lower, writable, spec.container)
            if shift is not None:  # no overlayfs: a copy of the box, its owners shifted
                unprivileged.prepare(folder, spec.container, lower, shift, overlay=False)
                unprivileged.shift_tree(writable, shift)
            rootfs = f"dir:{writable}"
        _write_guest_files(lower, writable, spec.files, shift or 0)
        _save_mounts(folder, spec.mounts, shift or 0)
        _write_raw(folder, spec.raw)
        _write_config(folder, _render_config(spec, rootfs, folder, shift, rootfs.startswith("overlay:")))

    def caches_layers(self) -> bool:
        """Over overlayfs (a normal user's layers are made as root of their id map, in which
        all their machines' files are)."""
        return self.copy_mode() == "overlay"

    def _save_layer(self, container: str, target: Path, leave_out: LeaveOut, limit: int,
                    previous: Path | None) -> int:
        from tapers.backend.layer_copy import copy_layer

        folder = self.lxcpath / container
        if not self.caches_layers() or not (folder / UPPER_DIR).is_dir():
            raise BackendError(f"`{container}` has no writable layer of its own to cache")
        seen = self._layers_seen.pop(container, None)
        c = self._container(container)
        frozen = c.state == "RUNNING"
        if c.state not in ("RUNNING", "STOPPED") or (frozen and not self._hold(c)):
            raise BackendError(f"container `{container}` can't be held still to copy its files ({c.state.lower()})")
        try:
            earlier = (previous, seen) if previous is not None and seen is not None else None
            if self.as_user:
                from tapers.backend.liblxc import userns

                size, self._layers_seen[container] = userns.call(
                    copy_layer, folder / UPPER_DIR, target, 0, leave_out, limit, earlier, True,
                    what=f"keep the files of `{container}` in the provisioning cache")
            else:
                size, self._layers_seen[container] = copy_layer(
                    folder / UPPER_DIR, target, unprivileged.shift_of(folder), leave_out, limit, earlier)
            return size
        finally:
            if frozen:
                c.unfreeze()

    def _create_as_user(self, spec: MachineSpec, record: Record, folder: Path) -> None:
        """A normal user's machine: the box is theirs, already in their id map; its writable
        layer and files are made as root of that map (userns.py)."""
        from tapers.backend.liblxc import userns

        if spec.privileged:
            raise BackendError(f"`{spec.container}`: a privileged machine's root is root on the host: only root "
                               "may make one", hint="remove `privileged: true`, or run tapers with sudo")
        paths.private_folder(self.lxcpath.parent)  # no host process of the machines' ids reaches them
        folder.mkdir(parents=True, mode=0o700)
        self._save_record_text(spec.container, record.to_json().encode())
        lower = spec.rootfs.resolve()
        overlay = self.copy_mode() == "overlay"
        writable = folder / (UPPER_DIR if overlay else COPY_DIR)
        userns.call(_make_writable_layer, lower, writable, overlay, spec.files, what=f"make the files of `{spec.container}`")
        below = [*(layer.resolve() for layer in spec.layers), lower]  # their layers are in their map, as the box
        rootfs = _overlay_rootfs(folder, below, writable) if overlay else f"dir:{writable}"
        _save_mounts(folder, spec.mounts, 0, staged=False)
        _write_raw(folder, spec.raw)
        _write_config(folder, _render_config(spec, rootfs, folder, None, overlay, as_user=True))

    def _remove_tree(self, folder: Path, ignore_errors: bool = False) -> None:
        """A machine's folder or a copy of its files: a normal user's are owned by their
        machines' ids, removed as root of that map."""
        if not self.as_user:
            _remove_tree(folder, ignore_errors)
            return
        from tapers.backend.liblxc import userns

        try:
            userns.run(["rm", "-rf", "--one-file-system", "--", str(folder)], f"remove {folder}")
        except TapersError:  # (a HostError when the user has no setup any more)
            if not ignore_errors:
                raise

    def remove_files(self, folder: Path) -> None:
        self._remove_tree(folder, ignore_errors=True)

    def _disk_usage(self, path: Path) -> int:
        if not self.as_user:
            return _disk_usage(path)
        from tapers.backend.liblxc import userns

        out = userns.run(["du", "-sb", "--", str(path)], f"measure {path}")
        return int(out.split()[0]) if out.strip() else 0

    def _copy_tree(self, source: Path, target: Path, container: str) -> None:
        if not self.as_user:
            _copy_tree(source, target, container)
            return
        from tapers.backend.liblxc import userns

        userns.run(["cp", "-a", "--reflink=auto", "--", str(source), str(target)], f"copy the files of `{container}`")

    def _free_id_range(self) -> int:
        """The first host uid of a range no container here maps (tapers' or not: read from
        their configs' `lxc.idmap` lines) and no one else was given. The caller holds the
        host's network lock, as for addresses."""
        mapped = []
        for name in self._names():
            try:
                items = lxc_config.parse((self.lxcpath / name / "config").read_text())
            except (OSError, UnicodeDecodeError):
                continue
            for key, value in items:
                fields = value.split()
                if key == "lxc.idmap" and len(fields) == 4 and fields[2].isdigit() and fields[3].isdigit():
                    mapped.append((int(fields[2]), int(fields[2]) + int(fields[3])))
        return unprivileged.free_range(mapped + unprivileged.others_ids())

    def _start(self, container: str) -> None:
        import subprocess

        prefix: list[str] = []
        if self.as_user:
            from tapers.backend.liblxc import delegation

            self._join()
            prefix = delegation.start_prefix()
        self._remove_monitor_cgroups(container)  # its last run's, if they were still in use then
        try:
            unprivileged.mount_box(self.lxcpath / container, container)
            _prepare_mounts(container, self.lxcpath / container)
            # lxc-start, not python-lxc's start: that one holds Python's lock until the
            # machine runs, and machines started in threads waited for each other.
            argv = [*prefix, "lxc-start", "--lxcpath", str(self.lxcpath), "--name", container]
            if subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, start_new_session=True).returncode:
                raise self._start_failure(container)
        except BaseException:
            self._release(container)  # no view or staged folder left mounted for nothing
            raise

    def _start_failure(self, container: str) -> BackendError:
        log = self.lxcpath / container / "lxc.log"
        if self.as_user and "Quota reached" in _tail(log):
            from tapers.backend.liblxc import grants

            grant = grants.mine()
            return BackendError(
                f"container `{container}` did not start: you may have {grant.nics} network interface(s) on "
                f"{grant.bridge} at once, and they are all in use (each machine takes one)",
                hint=f"halt a machine, or an admin allows more: sudo tapers host setup --user {grant.user} "
                     f"--nics {grant.nics * 2}",
            )
        return BackendError(f"container `{container}` did not start", hint=f"see its log: {log}")

    # Stopping goes through lxc-stop, not python-lxc: its shutdown and stop hold Python's
    # lock for as long as they wait, so machines halted in threads went one after another.
    def _shutdown(self, container: str, timeout: float) -> bool:
        return self._lxc_stop(container, "--nokill", "--timeout", str(int(max(1, timeout))))

    def _kill(self, container: str) -> None:
        if not self._lxc_stop(container, "--kill"):
            raise BackendError(f"container `{container}` could not be stopped")

    def _lxc_stop(self, container: str, *options: str) -> bool:
        """Whether the container is stopped afterwards (lxc-stop fails on one that stopped
        meanwhile: it is stopped all the same). In a session of its own: a Ctrl-C is for
        tapers to handle, not for a stop half-way."""
        import subprocess

        argv = ["lxc-stop", "--lxcpath", str(self.lxcpath), "--name", container, "--quiet", *options]
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
        return done.returncode == 0 or self._state(container) in (State.STOPPED, None)

    def _release(self, container: str) -> None:
        staging.release(container)
        unprivileged.unmount_box(container)
        if self._remove_monitor_cgroups(container):
            self._monitors_exiting.add(container)

    def _remove_monitor_cgroups(self, container: str, patience: float = 0.0) -> int:
        from tapers.backend.liblxc import delegation

        def others() -> set[str]:
            return set(os.listdir(self.lxcpath)) if self.lxcpath.is_dir() else set()

        user = None
        if self.as_user:
            from tapers.backend.liblxc import grants

            user = grants.current_user()
        return delegation.remove_monitor_cgroups(container, user, others, patience)

    def _join(self) -> None:
        """A user's tapers in cgroups of theirs (delegation.join) before it starts or freezes
        a machine (`_hold`)."""
        if self.as_user:
            from tapers.backend.liblxc import delegation, grants

            delegation.join(grants.current_user())

    def _hold(self, c: Any) -> bool:
        """Freeze python-lxc container `c`; whether it froze. LXC freezes through the v1
        freezer cgroup of the process that asks: a user's tapers joins theirs first."""
        self._join()
        return c.freeze()

    def _freeze(self, container: str) -> None:
        if not self._hold(self._container(container)):
            raise BackendError(f"container `{container}` could not be frozen")

    def _unfreeze(self, container: str) -> None:
        self._join()
        if not self._container(container).unfreeze():
            raise BackendError(f"container `{container}` could not be unfrozen")

    def _set_limits(self, container: str, limits: Limits, running: bool) -> None:
        _edit_config(self.lxcpath / container, cgroups.CONFIG_PREFIXES, cgroups.config_items(limits))
        c = self._container(container)
        for key, value in cgroups.live_items(limits) if running else ():
            if not c.set_cgroup_item(key, value):
                raise BackendError(f"container `{container}`: could not set {key} to {value} while running")

    def _reconfigure(
        self,
        container: str,
        hostname: str,
        private: tuple[NetworkConfig, ...],
        mounts: tuple[Mount, ...],
        files: tuple[GuestFile, ...],
        nesting: bool,
        raw: dict[str, Any] | None,
    ) -> None:
        folder = self.lxcpath / container
        extra_nics = tuple(f"lxc.net.{index}." for index in range(1, 10))
        items = [("lxc.uts.name", hostname), *_private_items(private),
                 *_mount_items(container, mounts, staged=not self.as_user), *_nesting_items(nesting)]
        _write_raw(folder, raw)
        include = ("lxc.include", str(folder / RAW_NAME))
        if include not in lxc_config.parse((folder / "config").read_text()):  # made by a tapers without `lxc:`
            items.append(include)
        _edit_config(folder, ("lxc.uts.name", "lxc.mount.entry", "lxc.apparmor.allow_nesting") + extra_nics, items)
        if self.as_user:
            from tapers.backend.liblxc import userns

            _save_mounts(folder, mounts, 0, staged=False)
            userns.call(_write_guest_files, _lower_dir(folder), _writable_dir(folder), files,
                        what=f"write the files of `{container}`")
            return
        shift = unprivileged.shift_of(folder)
        _save_mounts(folder, mounts, shift)
        _write_guest_files(_lower_dir(folder), _writable_dir(folder), files, shift)

    @contextmanager
    def _root_view(self, container: str) -> Iterator[Path]:
        c = self._container(container)
        folder = self.lxcpath / container
        shift = unprivileged.shift_of(folder)
        was_frozen = c.state == "FROZEN"
        hold = c.state == "RUNNING"
        if hold and not self._hold(c):
            raise BackendError(f"container `{container}` could not be frozen for copying")
        try:
            if self.as_user:  # mounted where files_command runs, in the user's id map
                with _mount_point(f"{container}-") as view:
                    self._user_views[view] = (_writable_dir(folder), Path(":".join(map(str, _lowers(folder)))))
                    try:
                        yield view
                    finally:
                        del self._user_views[view]
            elif shift:  # the files as the machine sees them: owners moved back down by its range
                with _unshifted(_writable_dir(folder), shift) as writable:
                    if (folder / UPPER_DIR).is_dir():
                        with _overlay_view(container, writable, _lowers(folder), userxattr=True) as view:
                            yield view
                    else:
                        yield writable
            elif hold or was_frozen:
                yield Path(f"/proc/{c.init_pid}/root")
            elif (folder / UPPER_DIR).is_dir():
                with _overlay_view(container, folder / UPPER_DIR, _lowers(folder)) as view:
                    yield view
            else:
                yield folder / COPY_DIR
        finally:
            if hold:
                c.unfreeze()

    def files_command(self, argv: list[str]) -> list[str]:
        """A normal user's machine's files are theirs to read only as its root: `argv` runs
        as root of the user's map, with each open root_view mounted (both layers read-only)."""
        if not self.as_user or not self._user_views:
            return argv
        from tapers.backend.liblxc import userns

        script, args = "", []
        for view, (writable, lower) in self._user_views.items():
            if writable.name == COPY_DIR:
                script += f'mount --bind "${len(args) + 1}" "${len(args) + 2}" && '
                args += [str(writable), str(view)]
            else:
                script += (f'mount -t overlay overlay -o "lowerdir=${len(args) + 1}:${len(args) + 2},userxattr" '
                           f'"${len(args) + 3}" && ')
                args += [str(writable), str(lower), str(view)]
        return userns.wrapped(["sh", "-c", f'{script}shift {len(args)} && exec "$@"', "sh", *args, *argv])

    def _usage(self, container: str) -> Usage | None:
        c = self._container(container)

        def item(key: str) -> str:
            for _ in range(3):
                try:
                    return c.get_cgroup_item(key) or ""
                except KeyError:
                    return ""
                except ValueError:  # python-lxc sizes a value in one read and fills it in another:
                    continue  # a file whose length changed in between (memory.stat) fails; read again
            return ""

        def counters(key: str) -> dict[str, str]:
            return dict(line.split(None, 1) for line in item(key).splitlines() if " " in line)

        # Memory is the working set, as `docker stats` and the kubelet count it: the usage
        # less the page cache not touched lately (the kernel takes that back first).
        if cgroups.unified():
            cpu_ns = int(counters("cpu.stat").get("usage_usec", 0)) * 1000
            memory, limit = item("memory.current"), item("memory.max")
            inactive = counters("memory.stat").get("inactive_file", "0")
        else:
            cpu_ns = int(item("cpuacct.usage") or 0)
            memory, limit = item("memory.usage_in_bytes"), item("memory.limit_in_bytes")
            inactive = counters("memory.stat").get("total_inactive_file", "0")
        rx = tx = 0
        for index in range(len(c.get_interfaces()) - 1):  # every NIC but lo
            pair = c.get_running_config_item(f"lxc.net.{index}.veth.pair")
            statistics = Path("/sys/class/net") / pair / "statistics" if pair else None
            if statistics and statistics.is_dir():
                rx += int((statistics / "tx_bytes").read_text())  # the host side sends what the machine receives
                tx += int((statistics / "rx_bytes").read_text())
        limit_bytes = int(limit) if limit.isdigit() and int(limit) < 2**62 else None
        working_set = max(0, int(memory or 0) - int(inactive.strip() or 0))
        return Usage(cpu_ns, working_set, limit_bytes, int(item("pids.current") or 0), rx, tx)

    # -- snapshots: copies of the machine's writable layer (the box below never changes) ----

    def _snapshot_save(self, container: str, name: str) -> None:
        c = self._container(container)
        target = self._snapshots(container) / name
        target.parent.mkdir(exist_ok=True)
        work = target.with_name(f".{name}.tmp")
        self._remove_tree(work, ignore_errors=True)
        work.mkdir()
        frozen = c.state == "RUNNING" and self._hold(c)
        try:
            self._copy_tree(_writable_dir(self.lxcpath / container), work / "disk", container)
        finally:
            if frozen:
                c.unfreeze()
        (work / RECORD_NAME).write_bytes(self._record_text(container) or b"")
        os.rename(work, target)

    def _snapshot_restore(self, container: str, name: str) -> None:
        source = self._snapshots(container) / name
        writable = _writable_dir(self.lxcpath / container)
        incoming = writable.with_name(writable.name + ".restore")
        outgoing = writable.with_name(writable.name + ".old")
        for leftover in (incoming, outgoing):
            self._remove_tree(leftover, ignore_errors=True)
        self._copy_tree(source / "disk", incoming, container)
        os.rename(writable, outgoing)
        os.rename(incoming, writable)
        self._remove_tree(outgoing, ignore_errors=True)
        saved = source / RECORD_NAME
        if saved.is_file() and saved.stat().st_size:
            self._save_record_text(container, saved.read_bytes())

    def _snapshot_list(self, container: str) -> list[Snapshot]:
        import datetime as dt

        folder = self._snapshots(container)
        snapshots = []
        for item in sorted(folder.iterdir()) if folder.is_dir() else []:
            if item.name.startswith(".") or not item.is_dir():
                continue
            created = dt.datetime.fromtimestamp(item.stat().st_mtime, dt.timezone.utc).isoformat(timespec="seconds")
            snapshots.append(Snapshot(item.name, created, self._disk_usage(item)))
        return snapshots

    def _snapshot_delete(self, container: str, name: str) -> None:
        self._remove_tree(self._snapshots(container) / name)

    def _snapshot_names(self, container: str) -> set[str]:
        """Without measuring each one (`du`), as `_snapshot_list` does."""
        folder = self._snapshots(container)
        return {p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")} if folder.is_dir() else set()

    def _snapshots(self, container: str) -> Path:
        return self.lxcpath / container / "snapshots"

    def _delete(self, container: str) -> None:
        if not self._container(container).destroy():
            raise BackendError(
                f"container `{container}` could not be destroyed",
                hint=f"see {self.lxcpath / container / 'lxc.log'}; `lxc-destroy -n {container}` removes it by hand",
            )
        if container in self._monitors_exiting:  # (stopped just now: no later start will tidy up after it)
            self._monitors_exiting.discard(container)
            self._remove_monitor_cgroups(container, patience=1.0)

    def _remove_leftovers(self, container: str) -> None:
        folder = self.lxcpath / container
        if folder.is_dir() and (folder / RECORD_NAME).exists():
            self._remove_tree(folder)  # an interrupted create left only our record
        staging.release(container)
        unprivileged.unmount_box(container)

    def _boot_id(self, container: str) -> str:
        pid = self._container(container).init_pid
        return str(pid) if pid > 0 else ""

    def _logins_refused(self, container: str) -> bool | None:
        pid = self._container(container).init_pid
        if pid <= 0:
            return None
        found = [_exists_in_guest(pid, *where) for where in (("run", "nologin"), ("etc", "nologin"))]
        return True if True in found else None if None in found else False

    def _reboot(self, container: str) -> None:
        if not self._container(container).reboot():
            raise BackendError(f"container `{container}` could not be rebooted")

    def _run(self, container: str, argv: list[str], env: dict[str, str], terminal: bool) -> int:
        import subprocess

        # The lxc-attach command, not python-lxc's attach_wait: that one leaves SIGINT and
        # SIGQUIT ignored in the whole process afterwards (Ctrl-C stopped working).
        command = ["lxc-attach", "-n", container, "-P", str(self.lxcpath), "--clear-env"]
        variables = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
                     **({"TERM": os.environ.get("TERM", "xterm")} if terminal else {}), **env}
        for key, value in variables.items():
            command += ["--set-var", f"{key}={value}"]
        if terminal:
            return subprocess.run([*command, "--", *argv]).returncode
        result = subprocess.run([*command, "--", *argv], capture_output=True, stdin=subprocess.DEVNULL)
        return result.returncode

    def _console(self, container: str) -> None:
        import subprocess

        subprocess.run(["lxc-console", "-n", container, "-P", str(self.lxcpath), "-t", "0"])


def _remove_tree(folder: Path, ignore_errors: bool = False) -> None:
    import shutil  # here, not at the top: it loads the compression modules, and `status` needs none

    shutil.rmtree(folder, ignore_errors=ignore_errors)


@contextmanager
def _overlay_view(container: str, upper: Path, lowers: list[Path], userxattr: bool = False) -> Iterator[Path]:
    """A stopped (or frozen) machine's files: its writable layer over its cached layers and
    the box, all read-only. `userxattr`: the layer was written by an unprivileged machine
    (its whiteouts and opaque folders are `user.overlay.*` attributes)."""
    import subprocess

    with _mount_point(f"{container}-") as view:
        stack = ":".join(str(layer) for layer in [upper, *lowers])
        layers = f"lowerdir={stack}" + (",userxattr" if userxattr else "")  # lower layers only: read-only
        # nosuid, nodev: the box's setuid files (and any a machine made) count for nothing here
        result = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"{layers},nosuid,nodev", str(view)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise BackendError(f"cannot assemble the files of `{container}`: {result.stderr.strip()}")
        yield view


@contextmanager
def _unshifted(folder: Path, shift: int) -> Iterator[Path]:
    """`folder` read-only, its owners moved down by `shift` (an unprivileged machine's files
    as they are inside it: what a packaged box must carry)."""
    from tapers.backend import idmap

    with _mount_point("unshifted-") as view:
        back = [(shift, 0, MACHINE_IDS)]
        idmap.bind(folder, view, back, back, readonly=True, inert=True)  # (guest root's setuid files are root's here)
        yield view


@contextmanager
def _mount_point(prefix: str) -> Iterator[Path]:
    """A fresh empty folder to mount a view on, in tapers' run folder, under `views/` where
    only its owner may pass (a mounted view has the mode of the machine's root folder, open to
    all: a host user must not reach a machine's files through it). Whatever got mounted there
    is unmounted, and the folder removed, at the end."""
    import tempfile

    from tapers.backend import idmap

    views = paths.host_run_dir() / VIEWS_DIR
    paths.private_folder(views)
    view = Path(tempfile.mkdtemp(prefix=prefix, dir=views))
    try:
        yield view
    finally:
        idmap.unmount(view)
        view.rmdir()


def _writable_dir(folder: Path) -> Path:
    return folder / UPPER_DIR if (folder / UPPER_DIR).is_dir() else folder / COPY_DIR


def _lower_dir(folder: Path) -> Path:
    """The box's root filesystem under an overlay machine (for folder owners and modes)."""
    return _lowers(folder)[-1]


def _lowers(folder: Path) -> list[Path]:
    """What an overlay machine's writable layer stands on, as the box's owners have it: its
    cached layers, the top one first, then the box."""
    box = unprivileged.box_of(folder)  # an unprivileged machine's config names the shifted views
    if box is not None:
        return [*unprivileged.layers_of(folder), box]
    for key, value in lxc_config.parse((folder / "config").read_text()):
        if key == "lxc.rootfs.path" and value.startswith("overlay:"):
            return [Path(part) for part in value.split(":")[1:-1]]
    return [_writable_dir(folder)]


def _edit_config(folder: Path, drop: tuple[str, ...], add: list[tuple[str, str]]) -> None:
    """Replace the config lines whose key starts with one of `drop` by `add` (atomically)."""
    config = folder / "config"
    kept = [line for line in lxc_config.lines(config.read_text()) if not line.split("=")[0].strip().startswith(drop)]
    _write_config(folder, lxc_config.render(add, config, header=tuple(kept)))


RAW_NAME = "tapers-raw.conf"


def _write_raw(folder: Path, raw: dict[str, Any] | None) -> None:
    """The Taperfile's `lxc:` keys (checked when it was loaded: taperfile/raw_keys.py), in
    the file the config includes last."""
    items = list((raw or {}).get("lxc", {}).items())
    header = ("# The Taperfile's `lxc:` keys, written by tapers; the config includes them after its own.",)
    tmp = folder / f"{RAW_NAME}.tmp"
    tmp.write_text(lxc_config.render(items, folder / RAW_NAME, header))
    os.replace(tmp, folder / RAW_NAME)


def _write_config(folder: Path, text: str) -> None:
    """The container's config, replaced atomically (a new container exists from here on)."""
    tmp = folder / "config.tmp"
    tmp.write_text(text)
    os.replace(tmp, folder / "config")


def _overlay_rootfs(folder: Path, below: list[Path], writable: Path) -> str:
    """lxc.rootfs.path of an overlay machine: its writable layer over `below` (its cached
    layers and the box, the top one first)."""
    _check_layers(folder, *below, writable)
    return "overlay:" + ":".join(str(layer) for layer in [*below, writable])


def _check_layers(folder: Path, *layers: Path) -> None:
    """`:` separates the layers in lxc.rootfs.path: no layer's folder may hold one."""
    for layer in layers:
        sinks.plain(layer, "a layer's folder", f"{folder / 'config'}: lxc.rootfs.path", forbidden=":")


def _tail(path: Path, size: int = 4096) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - size))
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def _disk_usage(path: Path) -> int:
    import subprocess

    result = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True)
    return int(result.stdout.split()[0]) if result.returncode == 0 and result.stdout else 0


def _nesting_items(nesting: bool) -> list[tuple[str, str]]:
    """Containers inside the machine: a /proc and a /sys without LXC's overmounts, which a
    nested container's own /proc and /sys need (as LXC's nesting.conf); with AppArmor, a
    profile that lets the machine load nested profiles."""
    if not nesting:
        return []
    return [
        ("lxc.apparmor.allow_nesting", "1"),
        ("lxc.mount.entry", "proc dev/.lxc/proc proc create=dir,optional 0 0"),
        ("lxc.mount.entry", "sys dev/.lxc/sys sysfs create=dir,optional 0 0"),
    ]


def _render_config(spec: MachineSpec, rootfs: str, folder: Path, shift: int | None, overlay: bool,
                   as_user: bool = False) -> str:
    net = spec.network
    if as_user:
        from tapers.backend.liblxc import userns

        ids = unprivileged.config_items(userns.config_items(userns.mine()), overlay)
    elif shift is not None:
        ids = unprivileged.config_items(unprivileged.idmap_items(shift), overlay)
    else:
        ids = [("lxc.apparmor.profile", "unconfined")]
    items = [
        ("lxc.include", "/usr/share/lxc/config/debian.common.conf"),
        *ids,
        ("lxc.arch", "linux64"),
        ("lxc.uts.name", spec.hostname),
        ("lxc.rootfs.path", rootfs),
        ("lxc.signal.halt", "SIGRTMIN+3"),
        ("lxc.log.file", str(folder / "lxc.log")),
        ("lxc.log.level", "WARN"),
        ("lxc.net.0.type", "veth"),
        ("lxc.net.0.link", net.bridge),
        ("lxc.net.0.flags", "up"),
        ("lxc.net.0.name", "eth0"),
        ("lxc.net.0.hwaddr", net.mac),
        ("lxc.net.0.ipv4.address", net.with_broadcast()),
        ("lxc.net.0.ipv4.gateway", net.gateway),
        *_private_items(spec.private),
        *_mount_items(spec.container, spec.mounts, staged=not as_user),
        *_nesting_items(spec.nesting),
        *cgroups.config_items(spec.limits),
        ("lxc.include", str(folder / RAW_NAME)),  # the Taperfile's `lxc:` keys, after tapers' own
    ]
    header = ("# Written by tapers; `tapers up` rewrites it. Edit the Taperfile instead.",)
    return lxc_config.render(items, folder / "config", header)


MOUNTS_NAME = "tapers-mounts.json"


def _mount_items(container: str, mounts: tuple[Mount, ...], staged: bool = True) -> list[tuple[str, str]]:
    """`staged`: bind the view tapers mounts before each start (root); else the folder
    itself (a normal user: their machines map the user's own id, see userns.py)."""
    items = []
    for index, mount in enumerate(mounts):
        options = "bind,create=dir" + (",ro" if mount.readonly else "")
        source = staging.source_of(container, index, mount) if staged else mount.source
        items.append(("lxc.mount.entry", lxc_config.mount_entry(source, mount.target, options)))
    return items


def _save_mounts(folder: Path, mounts: tuple[Mount, ...], shift: int, staged: bool = True) -> None:
    (folder / MOUNTS_NAME).write_text(json.dumps(staging.as_records(mounts, shift, staged), indent=2) + "\n")


def _prepare_mounts(container: str, folder: Path) -> None:
    records = _mounts_of(folder)
    if records:
        staging.prepare(container, records)


def _mounts_of(folder: Path) -> list[dict[str, Any]]:
    try:
        return json.loads((folder / MOUNTS_NAME).read_text())
    except FileNotFoundError:
        return []


def _private_items(networks: tuple[NetworkConfig, ...]) -> list[tuple[str, str]]:
    items = []
    for index, net in enumerate(networks, start=1):
        items += [
            (f"lxc.net.{index}.type", "veth"),
            (f"lxc.net.{index}.link", net.bridge),
            (f"lxc.net.{index}.flags", "up"),
            (f"lxc.net.{index}.name", f"eth{index}"),
            (f"lxc.net.{index}.hwaddr", net.mac),
            (f"lxc.net.{index}.ipv4.address", net.with_broadcast()),
        ]
    return items


def _copy_tree(source: Path, target: Path, container: str) -> None:
    import subprocess

    result = subprocess.run(
        ["cp", "-a", "--reflink=auto", str(source), str(target)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise BackendError(f"could not copy the box into `{container}`: {result.stderr.strip()}")


def _write_guest_files(lower: Path, upper: Path, files: tuple[GuestFile, ...], shift: int = 0) -> None:
    """Write files into the machine's writable layer (which its guest has written too: no
    link in it is followed), creating parent folders with the owner and mode they have in
    the box, so the overlay shows them unchanged."""
    from tapers.rootfs import Root

    with Root(upper, "the machine's files", BackendError, id_shift=shift) as target, \
            Root(lower, "the box", BackendError) as box:
        for guest_file in files:
            private = guest_file.mode & 0o077 == 0
            target.write(guest_file.path, guest_file.content, guest_file.mode, guest_file.uid, guest_file.gid,
                         dir_mode=0o700 if private else 0o755, like=box)


def _make_writable_layer(lower: Path, writable: Path, overlay: bool, files: tuple[GuestFile, ...]) -> None:
    """As root of a normal user's id map (userns.call): the machine's writable layer, empty
    over the box or a copy of it, with tapers' files in it."""
    if overlay:
        writable.mkdir(mode=0o755)
    else:
        _copy_tree(lower, writable, writable.parent.name)
    _write_guest_files(lower, writable, files)


def _exists_in_guest(pid: int, *parts: str) -> bool | None:
    """Whether the path exists in the guest whose init is `pid`, seen through /proc/PID/root
    one folder at a time without following the guest's links (an absolute link there would
    point into the host's tree from here); None when it can't be told."""
    try:
        folder = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=folder)
            os.close(folder)
            folder = inner
        os.stat(parts[-1], dir_fd=folder, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False
    except OSError:  # a link where a folder should be, or no right to look
        return None
    finally:
        os.close(folder)

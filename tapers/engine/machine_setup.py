"""What a new machine is made of, besides its box: its record, the files written into it
before its first boot, and the host folders it mounts."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from tapers.engine import names
from tapers.engine.names import Peers
from tapers.backend.api import GuestFile, Mount
from tapers.boxes.cache import Box
from tapers.errors import StateError
from tapers.paths import PROJECT_STATE_DIR
from tapers.project import Project
from tapers.record import BoxRef, Record
from tapers.events import Reporter
from tapers.engine.settings import desired_settings
from tapers.ssh import keys
from tapers.taperfile import Machine
from tapers.taperfile.machine import PROJECT_MOUNT

def new_record(
    project_id: str, root: Path, project_key: str, machine: Machine, box: Box, address: str, mac: str, host_key: str,
    privileged: bool, peers: Peers = (),
) -> Record:
    """What tapers records on a container it creates (phase `creating` until it is whole)."""
    return Record(
        project=project_id,
        project_dir=str(root),
        machine=machine.name,
        box=BoxRef(box.name, box.version, box.id),
        address=address,
        mac=mac,
        user=box.user["name"],
        home=box.user["home"],
        uid=box.user["uid"],
        gid=box.user["gid"],
        host_key=host_key,
        authorized_key=project_key,
        applied={**desired_settings(machine), "privileged": privileged},
        hosts=hosts_digest(machine, peers),
        created=_now(),
    )


def guest_files(machine: Machine, box: Box, host_key: keys.KeyPair, project_key: str, peers: Peers = (),
                ) -> tuple[GuestFile, ...]:
    user = box.user
    nameservers = host_nameservers()
    resolv = "".join(f"nameserver {server}\n" for server in nameservers) or "# no DNS server reachable from containers\n"
    home = user["home"].lstrip("/")
    return (
        GuestFile("/etc/ssh/ssh_host_ed25519_key", host_key.private, 0o600),
        GuestFile("/etc/ssh/ssh_host_ed25519_key.pub", (host_key.public + "\n").encode(), 0o644),
        GuestFile(f"/{home}/.ssh/authorized_keys", (project_key + "\n").encode(), 0o600, user["uid"], user["gid"]),
        GuestFile("/etc/resolv.conf", resolv.encode()),
        *hostname_files(machine, peers),
    )


def host_nameservers() -> list[str]:
    """The host's DNS servers that a container can reach (loopback ones can't be)."""
    servers = []
    try:
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                address = ipaddress.ip_address(parts[1].split("%")[0])
                if not address.is_loopback:
                    servers.append(parts[1])
    except (OSError, ValueError):
        pass
    return servers


def hostname_files(machine: Machine, peers: Peers = ()) -> tuple[GuestFile, ...]:
    """/etc/hostname, and an /etc/hosts naming the machine and its `peers` (`sync_names`
    brings it up to date later, when they change)."""
    return (
        GuestFile("/etc/hostname", (machine.hostname + "\n").encode()),
        GuestFile("/etc/hosts", names.hosts_file(machine, peers).encode()),
    )


def hosts_digest(machine: Machine, peers: Peers = ()) -> str:
    """What the record keeps of the /etc/hosts `hostname_files` writes."""
    return names.digest(names.hosts_file(machine, peers))


def host_folders(project: Project, machine: Machine, reporter: Reporter) -> list[Path]:
    """The host side of each synced folder, created when missing: the person's that root
    acts for (see host_folders.sharer), else owned like the project folder. A writable one
    outside the project is checked against the person's approval first, on the very path
    used (a link in the project could have changed where it leads since the plan)."""
    from tapers.host_folders import make, out_of_reach, real_path, refusal, sharer
    from tapers.project_files import project_stat

    folders = []
    root = project.root
    inside = root.resolve()
    person = sharer(root)
    for synced in machine.synced:
        folder = real_path(root, synced.host, machine.name)
        if not synced.readonly and not folder.is_relative_to(inside):
            from tapers.engine import trust

            trust.require_approved(project, trust.SharedFolder(machine.name, folder, synced.guest))
        why = refusal(folder)
        if why is None and person is not None and not folder.is_dir():  # to create: theirs to make
            why = out_of_reach(folder, True, person)
        if why is not None:
            raise StateError(
                f"machine `{machine.name}`: the synced folder `{synced.host}` (at {synced.guest}) can't be shared: {why}",
                hint="sync a folder of your project instead (or set `disabled: true` on that entry)",
            )
        if not folder.is_dir():
            if not synced.create:
                raise StateError(f"synced folder {folder} of machine `{machine.name}` does not exist (`create: false`)")
            if person is None:  # (owned like the project folder: read only when one is to be made)
                folder_owner = project_stat(root)
                owner = (folder_owner.st_uid, folder_owner.st_gid)
            else:
                owner = (person.uid, person.gid)
            make(folder, owner)
            reporter.line(machine.name, f"created the synced folder {folder}")
        folders.append(folder)
    return folders


MASK = "mask"  # in `.tapers/`: the empty folder machines see in its place


def mounts(project: Project, machine: Machine, guest_uid: int, guest_gid: int, privileged: bool,
           reporter: Reporter) -> tuple[Mount, ...]:
    """Synced folders as mounts, idmapped so that the login user's files are those of the
    person root acts for (see host_folders.sharer), or else the folder owner's; on an
    unprivileged machine always (its login user is a host uid of its own). A writable one
    outside the project is checked against the person's approval (in host_folders)."""
    from tapers.host_folders import out_of_reach, sharer

    root = project.root
    result = []
    state = root / PROJECT_STATE_DIR  # (root is a real path; resolved again, a link swapped in would lead elsewhere)
    person = sharer(root)
    for synced, folder in zip(machine.synced, host_folders(project, machine, reporter), strict=True):
        if folder.resolve().is_relative_to(state):
            raise StateError(f"machine `{machine.name}`: the synced folder {folder} is in the project's "
                             f"{PROJECT_STATE_DIR}/, which is tapers' (the project key is there); refused",
                             hint="sync another folder")
        st = folder.stat()
        readonly = synced.readonly
        # (Acting for a person, what the login user writes is theirs, whoever owns the folder.)
        if person is None and not privileged and 0 in (st.st_uid, st.st_gid) and not readonly:
            if (synced.host, synced.guest) != (".", PROJECT_MOUNT):
                raise StateError(
                    f"machine `{machine.name}` is unprivileged, and its synced folder {folder} belongs to root "
                    f"(uid {st.st_uid}, gid {st.st_gid}): what its login user wrote there would be root's on this "
                    "host (a setuid-root file, say)",
                    hint=f"give the folder to your user (chown -R you: {folder}), set `readonly: true` on it, "
                    "or set `privileged: true` on the machine",
                )
            # The project folder mounted by default: shared, but read-only, and said.
            readonly = True
            reporter.line(machine.name, f"the project folder belongs to root: {PROJECT_MOUNT} is read-only in this "
                          f"unprivileged machine (to write it from the machine: chown -R you: {folder})")
        why = out_of_reach(folder, not readonly, person) if person is not None else None
        if why is not None:
            raise StateError(f"machine `{machine.name}`: the synced folder {folder} can't be shared: {why}",
                             hint="share a folder that user may read (and write, or set `readonly: true` on it)")
        # What the login user writes there is the person's (root acting for someone: never
        # the folder owner's, who may be another user that left it open to them), else the owner's.
        host_uid, host_gid = (person.uid, person.gid) if person is not None else (st.st_uid, st.st_gid)
        same = privileged and (host_uid, host_gid) == (guest_uid, guest_gid)
        result.append(Mount(folder, synced.guest, readonly, None if same else (guest_uid, host_uid, guest_gid, host_gid)))
    return tuple(result) + _masks(state, tuple(result), guest_uid, guest_gid, privileged)


def _masks(state: Path, mounts: tuple[Mount, ...], guest_uid: int, guest_gid: int,
           privileged: bool) -> tuple[Mount, ...]:
    """`.tapers/`, wherever a synced folder shows it in the machine, covered by an empty
    read-only folder: the project key that logs in to every machine of the project, the
    inventories and caches are tapers' and the person's, not the machines'."""
    from tapers import project_files

    covering = [m for m in mounts if state.is_relative_to(m.source.resolve())]
    if not covering:
        return ()
    mask = state / MASK
    project_files.check_dir(state, create=True)
    project_files.check_dir(mask, create=True)
    st = mask.stat()
    same = privileged and (st.st_uid, st.st_gid) == (guest_uid, guest_gid)
    return tuple(Mount(mask, f"{m.target.rstrip('/')}/{state.relative_to(m.source.resolve())}", True,
                       None if same else (guest_uid, st.st_uid, guest_gid, st.st_gid)) for m in covering)


def _now() -> str:
    """This moment in UTC, to the second, as ISO 8601 (what a record says of its creation)."""
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")

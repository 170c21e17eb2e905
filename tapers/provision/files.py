"""`file:` steps: a file or folder of the project uploaded over SFTP to the guest.

Parent folders are created; executable bits are kept. The copy belongs to the login
user when the destination is inside its home folder, to root anywhere else.
"""

from __future__ import annotations

import errno
import os
import shlex
import stat
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from tapers.provision.api import (Guest, Inputs, StepFailed, digest, open_step_file, settings_inputs, step_file, tree_digest,
                                  tree_inputs, unreadable_by)
from tapers.taperfile.machine import Step

if TYPE_CHECKING:
    from tapers.host_folders import Sharer


class FileProvisioner:
    kind = "file"

    def legacy_fingerprint(self, step: Step, root: Path) -> str:
        """The fingerprint tapers recorded before it recorded inputs."""
        source = step_file(root, step.options["source"], "the source")
        return digest({"kind": self.kind, "tree": tree_digest(source), "destination": step.options["destination"]})

    def inputs(self, step: Step, root: Path) -> Inputs:
        source = step_file(root, step.options["source"], "the source")
        return {**tree_inputs(root, source), **settings_inputs(step.options, ("destination",))}

    def run(self, step: Step, guest: Guest) -> None:
        from tapers.host_folders import sharer

        source = step_file(guest.root, step.options["source"], "the source")
        fd = open_step_file(source, "the source")
        destination = step.options["destination"].rstrip("/") or "/"
        try:
            code = copy_into(guest, fd, destination, sharer(guest.root) if os.geteuid() == 0 else None)
        finally:
            os.close(fd)
        if code != 0:
            raise StepFailed(f"could not copy {step.options['source']} to {destination} (exit code {code})")

    def check_host(self) -> None:
        pass


def copy_into(guest: Guest, fd: int, destination: str, person: Sharer | None = None) -> int:
    """The file or folder open at `fd` to `destination` in the machine (parents made, modes
    kept): uploaded to a private staging folder, then copied into place, as root (owned by
    root) unless the destination is in the login user's home. The copy's exit code.
    `person`: whom root acts for; a file in it they couldn't read themselves is refused."""
    staging = f"/tmp/tapers-upload-{uuid.uuid4().hex[:12]}"
    guest.mkdir(staging, 0o700)
    payload = f"{staging}/payload"
    _upload(guest, fd, payload, person)
    parent = str(Path(destination).parent)
    copy = f"mkdir -p {shlex.quote(parent)} && cp -rT --preserve=mode {shlex.quote(payload)} {shlex.quote(destination)}"
    as_user = destination == guest.home or destination.startswith(guest.home.rstrip("/") + "/")
    command = copy if as_user else f"sudo -n sh -c {shlex.quote(copy)}"
    return guest.run(f"{command}; rc=$?; rm -rf {shlex.quote(staging)}; exit $rc")


def _upload(guest: Guest, fd: int, remote: str, person: Sharer | None = None) -> None:
    """The file or folder open at `fd`, with the files and folders in it, each opened from
    its folder's fd without following links (links and special files are left out: a link
    could lead anywhere on the host, and a folder swapped for one while this runs is not
    followed either)."""
    st = os.fstat(fd)
    if person is not None:
        where = Path(os.readlink(f"/proc/self/fd/{fd}"))
        why = unreadable_by(person, where, fd)
        if why is not None:
            raise StepFailed(f"{where}: {why}; not copied into the machine")
    if stat.S_ISREG(st.st_mode):
        with os.fdopen(os.dup(fd), "rb") as handle:
            guest.put(handle, remote, st.st_mode & 0o777)
        return
    if not stat.S_ISDIR(st.st_mode):
        return
    guest.mkdir(remote, st.st_mode & 0o777)
    for name in sorted(os.listdir(fd)):
        kind = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
        if not (stat.S_ISREG(kind) or stat.S_ISDIR(kind)):
            continue
        try:
            child = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # became a link since it was listed
                continue
            raise
        try:
            _upload(guest, child, f"{remote}/{name}", person)
        finally:
            os.close(child)


PROVISIONER = FileProvisioner()

"""`file:` steps: a file or folder of the project uploaded over SFTP to the guest.

Parent folders are created; executable bits are kept. The copy belongs to the login
user when the destination is inside its home folder, to root anywhere else.
"""

from __future__ import annotations

import shlex
import stat
import uuid
from pathlib import Path

from tapers.provision.api import Guest, StepFailed, digest, step_file, tree_digest
from tapers.taperfile.machine import Step


class FileProvisioner:
    kind = "file"

    def fingerprint(self, step: Step, root: Path) -> str:
        source = step_file(root, step.options["source"], "the source")
        return digest({"kind": self.kind, "tree": tree_digest(source), "destination": step.options["destination"]})

    def run(self, step: Step, guest: Guest) -> None:
        source = step_file(guest.root, step.options["source"], "the source")
        destination = step.options["destination"].rstrip("/") or "/"
        staging = f"/tmp/tapers-upload-{uuid.uuid4().hex[:12]}"
        guest.mkdir(staging, 0o700)
        payload = f"{staging}/payload"
        _upload(guest, source, payload)
        parent = str(Path(destination).parent)
        copy = (
            f"mkdir -p {shlex.quote(parent)} && cp -rT --preserve=mode {shlex.quote(payload)} {shlex.quote(destination)}"
        )
        as_user = destination == guest.home or destination.startswith(guest.home.rstrip("/") + "/")
        command = copy if as_user else f"sudo -n sh -c {shlex.quote(copy)}"
        code = guest.run(f"{command}; rc=$?; rm -rf {shlex.quote(staging)}; exit $rc")
        if code != 0:
            raise StepFailed(f"could not copy {step.options['source']} to {destination} (exit code {code})")

    def check_host(self) -> None:
        pass


def _upload(guest: Guest, local: Path, remote: str) -> None:
    """A file, or a folder with its files and folders (links and special files in it are
    left out: a link could lead anywhere on the host)."""
    st = local.lstat()
    if stat.S_ISREG(st.st_mode):
        guest.put(local, remote, st.st_mode & 0o777)
        return
    if not stat.S_ISDIR(st.st_mode):
        return
    guest.mkdir(remote, st.st_mode & 0o777)
    for item in sorted(local.iterdir()):
        _upload(guest, item, f"{remote}/{item.name}")


PROVISIONER = FileProvisioner()

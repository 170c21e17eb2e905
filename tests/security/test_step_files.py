"""Provisioning steps name host files that tapers reads as root and hands to a machine: a
hostile Taperfile must not get the host's secrets into a machine, nor make tapers read
forever (a device, a pipe), nor reach outside a copied folder through its links."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tapers.errors import ProvisionError, TaperfileError
from tapers.provision import fingerprint
from tapers.provision.files import _upload
from tapers.taperfile import load_taperfile
from tapers.taperfile.machine import Step


@pytest.mark.parametrize("kind,key,value", [
    ("file", "source", "/etc/shadow"), ("file", "source", "/root/.ssh"), ("shell", "path", "/dev/zero"),
    ("shell", "path", "/proc/self/environ"), ("ansible", "playbook", "/etc/ssh/../passwd"),
])
def test_a_step_file_in_a_folder_no_machine_may_see_is_refused(kind: str, key: str, value: str,
                                                                tmp_path: Path) -> None:
    extra = ", destination: /tmp/x" if kind == "file" else ""
    taperfile = tmp_path / "Taperfile.yaml"
    taperfile.write_text(f"version: 1\nmachines:\n  web:\n    provision:\n      - {kind}: {{{key}: {value}{extra}}}\n")
    with pytest.raises(TaperfileError) as refused:
        load_taperfile(taperfile)
    assert f"machines.web.provision[1].{kind}.{key}" in refused.value.message
    assert "can't be given to a machine" in refused.value.message


def test_a_pipe_as_a_script_is_refused_without_waiting_on_it(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "setup.sh")
    taperfile = tmp_path / "Taperfile.yaml"
    taperfile.write_text("version: 1\nmachines:\n  web:\n    provision:\n      - shell: {path: setup.sh}\n")
    outcome: list[BaseException] = []
    worker = threading.Thread(target=lambda: outcome.append(_raises(lambda: load_taperfile(taperfile))), daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "validating a Taperfile whose script is a pipe waited on the pipe"
    assert isinstance(outcome[0], TaperfileError) and "not a regular file" in outcome[0].message
    step = Step(1, None, "shell", "once", False, {"path": "setup.sh"})
    with pytest.raises(ProvisionError):
        fingerprint(step, tmp_path)  # the same check where the file is read


def _raises(call) -> BaseException | None:
    try:
        call()
    except BaseException as exc:  # noqa: BLE001  (the test inspects it)
        return exc
    return None


class RecordingGuest:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.folders: list[str] = []

    def put(self, source, remote: str, mode: int) -> None:
        self.files[remote] = source.read()

    def mkdir(self, remote: str, mode: int = 0o755) -> None:
        self.folders.append(remote)


def test_links_in_a_copied_folder_are_neither_followed_nor_hashed(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    (conf / "sub").mkdir(parents=True)
    (conf / "app.ini").write_text("[app]\n")
    os.symlink("/etc/shadow", conf / "shadow")
    os.symlink("/etc", conf / "sub" / "etc")
    os.mkfifo(conf / "pipe")
    guest = RecordingGuest()
    fd = os.open(conf, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _upload(guest, fd, "/payload")
    finally:
        os.close(fd)
    assert guest.files == {"/payload/app.ini": b"[app]\n"}
    assert guest.folders == ["/payload", "/payload/sub"]
    step = Step(1, None, "file", "once", False, {"source": "conf", "destination": "/etc/app"})
    before = fingerprint(step, tmp_path)
    os.unlink(conf / "shadow")
    os.symlink("/etc/passwd", conf / "shadow")
    assert fingerprint(step, tmp_path) == before  # links are not read, so nothing of the host is hashed


def test_a_folder_swapped_for_a_link_while_it_is_copied_is_not_followed(tmp_path: Path) -> None:
    """The attacker renames a checked folder and puts a link to /etc in its place while the
    upload runs (here: right when the folder before it is created in the guest)."""
    from tapers.provision.files import FileProvisioner

    conf = tmp_path / "assets"
    (conf / "a").mkdir(parents=True)
    (conf / "sub").mkdir()
    (conf / "sub" / "app.ini").write_text("[app]\n")

    class SwappingGuest(RecordingGuest):
        root = tmp_path
        home = "/home/tapers"

        def mkdir(self, remote: str, mode: int = 0o755) -> None:
            super().mkdir(remote, mode)
            if remote.endswith("/payload/a"):
                os.rename(conf / "sub", tmp_path / "moved")
                os.symlink("/etc", conf / "sub")

        def run(self, command: str) -> int:
            return 0

    guest = SwappingGuest()
    step = Step(1, None, "file", "once", False, {"source": "assets", "destination": "/srv/assets"})
    FileProvisioner().run(step, guest)
    assert not any("shadow" in remote or "passwd" in remote for remote in guest.files)
    assert all(data == b"[app]\n" for data in guest.files.values())


def test_a_script_is_read_from_its_checked_path_and_bounded(tmp_path: Path) -> None:
    from tapers.provision.api import read_step_file

    big = tmp_path / "big.sh"
    with big.open("wb") as handle:
        handle.truncate(17 * 1024**2)
    with pytest.raises(ProvisionError, match="larger than 16 MiB"):
        read_step_file(big, "the script")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "s.sh").write_text("echo\n")
    os.rename(tmp_path / "dir", tmp_path / "real")
    os.symlink(tmp_path / "real", tmp_path / "dir")
    with pytest.raises(ProvisionError, match="changed since it was checked"):
        read_step_file(tmp_path / "dir" / "s.sh", "the script")

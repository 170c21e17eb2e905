"""A small virtual machine that is a mainstream modern Linux host for tapers: Debian 12,
systemd as PID 1, cgroup v2 only. No container can be one on a host whose controllers are
bound to cgroup v1 hierarchies (this test host), so qemu boots one.

The guest is Debian bookworm from the Debian mirror (mmdebstrap), its kernel booted directly,
its disks ext4 images made without loop mounts (`mke2fs -d`). root and USER log in with the
given key. A second, read-only disk at /opt/tapers-vm holds the code copy
(`readable_code_copy()`, as `tapers/`) and the box archive (`box.tar`). Its only network is
qemu's user-mode NIC with `restrict=on`: the guest reaches nothing, and its sshd is forwarded
to 127.0.0.1:PORT.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

USER = "vmdev"
PACKAGES = (
    "linux-image-amd64", "systemd", "systemd-sysv", "udev", "dbus", "libpam-systemd", "dbus-user-session",
    "openssh-server", "openssh-client", "sudo", "lxc", "lxc-templates", "uidmap", "nftables", "libnftables1",
    "iproute2", "apparmor", "python3", "mmdebstrap", "e2fsprogs", "kmod", "procps",
)
DATA = "/opt/tapers-vm"
PYTHONPATH = f"{DATA}/tapers:{DATA}/tapers/site-packages"
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5")
GUEST_FILES = {
    "etc/hostname": "tapers-vm\n",
    "etc/hosts": "127.0.0.1 localhost\n127.0.1.1 tapers-vm\n",
    "etc/fstab": f"/dev/vda / ext4 rw,errors=remount-ro 0 1\n/dev/vdb {DATA} ext4 ro,nofail 0 0\n",
    "etc/systemd/network/10-tapers-vm.network": "[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n",
}


def build_image(folder: Path, code: Path, box_tar: Path, public_key: str) -> None:
    """FOLDER/root.img (the guest's /) and FOLDER/data.img (CODE and BOX_TAR)."""
    rootfs = folder / "rootfs"
    subprocess.run(["mmdebstrap", "--quiet", "--variant=apt", f"--include={','.join(PACKAGES)}",
                    "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
                    "--dpkgopt=path-exclude=/usr/share/locale/*", "bookworm", str(rootfs),
                    "http://deb.debian.org/debian"], check=True, capture_output=True)
    for name, text in GUEST_FILES.items():
        (rootfs / name).parent.mkdir(parents=True, exist_ok=True)
        (rootfs / name).write_text(text)
    (rootfs / DATA.lstrip("/")).mkdir(parents=True)
    chroot = ["chroot", str(rootfs)]
    subprocess.run([*chroot, "systemctl", "enable", "systemd-networkd", "ssh"], check=True, capture_output=True)
    subprocess.run([*chroot, "useradd", "-m", "-s", "/bin/bash", USER], check=True)
    for home, owner in (("root", "root:"), (f"home/{USER}", f"{USER}:")):
        (rootfs / home / ".ssh").mkdir(mode=0o700, exist_ok=True)
        (rootfs / home / ".ssh" / "authorized_keys").write_text(public_key.strip() + "\n")
        subprocess.run([*chroot, "chown", "-R", owner, f"/{home}/.ssh"], check=True)
    _ext4(rootfs, folder / "root.img", "6G")
    with tempfile.TemporaryDirectory(prefix="data-", dir=folder) as data:
        shutil.copytree(code, Path(data) / "tapers", symlinks=True)
        shutil.copy2(box_tar, Path(data) / "box.tar")
        subprocess.run(["chmod", "-R", "a+rX", data], check=True)
        used = int(subprocess.run(["du", "-sm", data], capture_output=True, text=True, check=True).stdout.split()[0])
        _ext4(Path(data), folder / "data.img", f"{used * 5 // 4 + 64}M")


def _ext4(source: Path, image: Path, size: str) -> None:
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(source), str(image), size], check=True,
                   stdout=subprocess.DEVNULL)


@dataclass
class VM:
    process: subprocess.Popen
    port: int
    key: Path
    console: Path  # the serial console's output

    def ssh(self, user: str, command: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(["ssh", "-i", str(self.key), *SSH_OPTIONS, "-p", str(self.port), f"{user}@127.0.0.1",
                               command], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def accelerator() -> list[str]:
    """KVM where it boots a stock kernel; else qemu's emulation (several times slower). A
    PVM host's /dev/kvm (kvm_pvm, as on this test host) runs only kernels built for PVM."""
    if os.access("/dev/kvm", os.R_OK | os.W_OK) and not Path("/sys/module/kvm_pvm").exists():
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg,thread=multi", "-cpu", "max"]


def boot(folder: Path, key: Path, timeout: float = 600) -> VM:
    """Boot FOLDER's images; the VM once root logs in over SSH, or TimeoutError with the end
    of its console."""
    kernel = sorted(glob.glob(f"{folder}/rootfs/boot/vmlinuz-*"))[-1]
    initrd = sorted(glob.glob(f"{folder}/rootfs/boot/initrd.img-*"))[-1]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    console = folder / "console.log"
    command = [
        "qemu-system-x86_64", *accelerator(), "-m", "2048", "-smp", "2",
        "-kernel", kernel, "-initrd", initrd, "-append", "root=/dev/vda rw console=ttyS0 quiet",
        "-drive", f"file={folder / 'root.img'},format=raw,if=virtio",
        "-drive", f"file={folder / 'data.img'},format=raw,if=virtio,readonly=on",
        "-nic", f"user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-display", "none", "-serial", f"file:{console}", "-monitor", "none", "-no-reboot",
    ]
    with open(folder / "qemu.log", "wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    vm = VM(process, port, key, console)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"qemu exited ({process.returncode}): {(folder / 'qemu.log').read_text()}")
            try:
                if vm.ssh("root", "true", timeout=10).returncode == 0:
                    return vm
            except subprocess.TimeoutExpired:
                pass
            time.sleep(0.5)  # between attempts (a refused connection returns at once)
    except BaseException:
        shutdown(vm)
        raise
    shutdown(vm)
    tail = console.read_text(errors="replace")[-2000:] if console.exists() else ""
    raise TimeoutError(f"the VM's sshd did not answer on 127.0.0.1:{port} in {timeout} s; its console:\n{tail}")


def shutdown(vm: VM, timeout: float = 60) -> None:
    """Power the guest off (qemu is killed if it has not stopped after `timeout` seconds)."""
    if vm.process.poll() is None:
        try:
            vm.ssh("root", "systemctl poweroff", timeout=10)
        except subprocess.TimeoutExpired:
            pass
        try:
            vm.process.wait(timeout)
        except subprocess.TimeoutExpired:
            vm.process.kill()
            vm.process.wait()

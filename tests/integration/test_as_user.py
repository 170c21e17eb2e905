"""tapers run by normal users, after `sudo tapers host setup --user NAME`.

The suite runs as root: it creates three users, sets up two of them (the second allowed a
single network interface), runs tapers as them through a login shell (`su -l`, the way a
developer's shell is made), and at the end tears the setup down and checks that the host
is back as it was.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.conftest import BOX, RUN_ID, Result, box_archive, readable_code_copy, wait_for

PYTHON = sys.executable
PRIVATE = "192.168.213.0/24"  # user a's host-only range


@dataclass
class HostUser:
    name: str
    env: dict[str, str] = field(default_factory=dict)  # what the user's tapers needs (PYTHONPATH)
    python: str = PYTHON  # the interpreter they run tapers with
    bin: str = ""  # a folder of commands put first on their PATH (ansible-playbook, with a copy)

    @property
    def account(self) -> pwd.struct_passwd:
        return pwd.getpwnam(self.name)

    @property
    def home(self) -> Path:
        return Path(self.account.pw_dir)

    @property
    def machines(self) -> Path:
        return self.home / ".local/share/tapers/machines"

    def sh(self, command: str, timeout: float = 300) -> Result:
        """`command` in the user's login shell."""
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in {"NO_COLOR": "1", **self.env}.items())
        if self.bin:
            exports += f' PATH={shlex.quote(self.bin)}:"$PATH"'
        process = subprocess.run(["su", "-l", self.name, "-c", f"export {exports}; {command}"],
                                 capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return Result(process.returncode, process.stdout, process.stderr, ("su", self.name, command))

    def tapers(self, *args: str, cwd: Path | None = None, timeout: float = 300) -> Result:
        folder = shlex.quote(str(cwd or self.home))
        result = self.sh(f"cd {folder} && {shlex.quote(self.python)} -P -m tapers {shlex.join(args)}", timeout)
        return Result(result.code, result.out, result.err, args)

    def project(self, name: str, taperfile: str) -> Path:
        folder = self.home / name
        folder.mkdir(exist_ok=True)
        (folder / "Taperfile.yaml").write_text(f"version: 1\nname: {RUN_ID}-{name}\n" + taperfile)
        for path in (folder, *folder.rglob("*")):
            os.lchown(path, self.account.pw_uid, self.account.pw_gid)
        return folder

    def container(self, project: str, machine: str) -> str:
        return f"tapers-{RUN_ID}-{project}-{machine}"

    def lxc_state(self, project: str, machine: str) -> str:
        result = self.sh(f"lxc-info -P {self.machines} -n {self.container(project, machine)} -s -H")
        return result.out.strip() if result.code == 0 else "MISSING"


def host_state() -> dict:
    """What `host setup` may change, read directly."""
    def text(path: str) -> str:
        try:
            return Path(path).read_text()
        except FileNotFoundError:
            return "(none)"

    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return {  # (shadow's tools, which the tests use too, may write the ranges in another order)
        "subuid": sorted(text("/etc/subuid").splitlines()),
        "subgid": sorted(text("/etc/subgid").splitlines()),
        "lxc-usernet": text("/etc/lxc/lxc-usernet"),
        "bridges": sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name.startswith("tpu")),
        "nft": "tapers_users" in tables,
        "cgroups": sorted(str(p) for p in Path("/sys/fs/cgroup").glob("*/tapers")),
        "grants": Path("/etc/tapers").exists(),
        "boot hook": sorted(str(p) for p in (*Path("/etc").glob("rc*.d/*tapers-host"), Path("/etc/init.d/tapers-host"),
                                             Path("/etc/systemd/system/tapers-host.service")) if p.exists()),
    }


def _user_can_run(user: HostUser) -> bool:
    return user.sh(f"{shlex.quote(user.python)} -P -c 'import tapers, lxc'").code == 0


def _readable_tapers(user: HostUser) -> None:
    """The user runs this very tapers: as it is when they can read it, else (a clone in
    root's home; TAPERS_TEST_COPY_CODE=1 forces it) the real interpreter with a copy of the
    package and its libraries they can read."""
    if _user_can_run(user) and not os.environ.get("TAPERS_TEST_COPY_CODE"):
        return
    copy = readable_code_copy()
    user.env["PYTHONPATH"] = f"{copy}:{copy / 'site-packages'}"
    user.python = os.path.realpath(PYTHON)  # the venv's python is a link to it
    user.bin = str(copy / "bin")
    assert _user_can_run(user), (f"user {user.name} can't run {user.python} with a copy of tapers: "
                                 "make .venv with /usr/bin/python3, as scripts/setup does")


@dataclass
class Users:
    a: HostUser  # set up, runs machines
    b: HostUser  # set up with a single network interface
    c: HostUser  # never set up
    before: dict


@pytest.fixture(scope="module")
def users(box_home) -> Users:
    names = [f"tp{RUN_ID}{x}" for x in "abc"]
    made = []
    try:
        for name in names:  # c without subordinate ids: setup gives c some
            ids = ["-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0"] if name.endswith("c") else []
            subprocess.run(["useradd", "-m", "-s", "/bin/bash", *ids, name], check=True, capture_output=True)
            made.append(HostUser(name))
        a, b, c = made
        before = host_state()  # useradd gave them subordinate ids: setup must not take those away
        root_tapers(("host", "setup", "--user", a.name, "--private", PRIVATE)).ok()
        root_tapers(("host", "setup", "--user", b.name, "--nics", "1")).ok()
        _readable_tapers(a)
        a.env["TAPERS_CACHE_MAX_SIZE"] = "0"  # no provisioning cache but where a test turns it on
        for other in (b, c):
            other.env, other.python, other.bin = dict(a.env), a.python, a.bin
        box = box_archive(box_home.home, Path(f"/var/tmp/tapers-{RUN_ID}-box.tar"))
        for user in (a, b):
            user.tapers("box", "add", BOX, str(box), "--from-rootfs").ok()
        yield Users(a, b, c, before)
    finally:
        for user in made:
            for project in user.home.glob("*/Taperfile.yaml"):
                user.tapers("destroy", "-f", cwd=project.parent)
            if Path(f"/etc/tapers/users/{user.name}.json").exists():
                root_tapers(("host", "teardown", "--user", user.name, "--force"))
            subprocess.run(["userdel", "-r", user.name], capture_output=True)
        for leftover in Path("/var/tmp").glob(f"tapers-{RUN_ID}-code-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        Path(f"/var/tmp/tapers-{RUN_ID}-box.tar").unlink(missing_ok=True)


def root_tapers(args: tuple[str, ...]) -> Result:
    process = subprocess.run([PYTHON, "-P", "-m", "tapers", *args], capture_output=True, text=True, timeout=120,
                             stdin=subprocess.DEVNULL, env={**os.environ, "NO_COLOR": "1"})
    return Result(process.returncode, process.stdout, process.stderr, args)


def _sub_uid(user: HostUser) -> int:
    for line in Path("/etc/subuid").read_text().splitlines():
        name, start, count = line.split(":")
        if name == user.name and int(count) >= 65536:
            return int(start)
    raise AssertionError(f"{user.name} has no subordinate ids")


def _echo_servers(user: HostUser, project: Path) -> None:
    """A TCP and a UDP echo service in the machine, on 8000 and 8053."""
    server = (
        "import socket, threading\n"
        "def tcp():\n"
        "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "    s.bind(('0.0.0.0', 8000)); s.listen()\n"
        "    while True:\n"
        "        c, _ = s.accept(); c.sendall(b'tcp says ' + c.recv(100)); c.close()\n"
        "threading.Thread(target=tcp, daemon=True).start()\n"
        "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('0.0.0.0', 8053))\n"
        "while True:\n"
        "    d, a = u.recvfrom(100); u.sendto(b'udp says ' + d, a)\n"
    )
    (project / "echo.py").write_text(server)
    user.tapers("ssh", "web", "-c", "nohup python3 /tapers/echo.py >/dev/null 2>&1 &", cwd=project).ok()


def _tcp(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(b"hi")
        return s.recv(100)


def _udp(port: int) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1)
        s.sendto(b"hi", ("127.0.0.1", port))
        return s.recv(100)


def _answers(call, port: int) -> bool:  # type: ignore[no-untyped-def]
    try:
        return bool(call(port))
    except OSError:
        return False


def test_a_user_without_setup_is_told_the_one_command_and_nothing_is_made(users: Users) -> None:
    c = users.c
    fix = f"sudo tapers host setup --user {c.name}"
    doctor = c.tapers("doctor")
    assert doctor.code != 0 and f"FAIL  host setup for user {c.name}" in doctor.out and fix in doctor.out, doctor.out
    project = c.project("plain", "machines:\n  web: {}\n")
    up = c.tapers("up", cwd=project)
    assert up.code != 0 and fix in up.err and "Traceback" not in up.err, up.err
    assert not c.machines.exists() or not any(c.machines.iterdir())
    assert not any(p.name.startswith("tpu") for p in Path("/sys/class/net").iterdir() if str(c.account.pw_uid) in p.name)


def test_a_user_runs_the_whole_lifecycle_without_root(users: Users) -> None:
    a = users.a
    project = a.project("life", """\
machines:
  web:
    memory: 256M
    networks:
      - forwarded_port: {guest: 8000, host: 18%03d}
      - forwarded_port: {guest: 8053, host: 18%03d, protocol: udp}
    provision:
      - shell: {inline: "id -un > /tapers/by-login-user", privileged: false}
      - shell: "touch /tapers/by-guest-root"
      - file: {source: note.txt, destination: /home/tapers/note.txt}
      - ansible: {playbook: site.yml}
""" % (os.getpid() % 1000, os.getpid() % 1000 + 1))
    tcp_port, udp_port = 18000 + os.getpid() % 1000, 18000 + os.getpid() % 1000 + 1
    (project / "note.txt").write_text("from the host\n")
    (project / "site.yml").write_text("- hosts: all\n  become: true\n  tasks:\n"
                                      "    - copy: {content: \"by ansible\\n\", dest: /etc/by-ansible}\n")
    for name in ("note.txt", "site.yml"):
        os.chown(project / name, a.account.pw_uid, a.account.pw_gid)

    a.tapers("trust", "--yes", cwd=project).ok()
    a.tapers("up", cwd=project).ok()
    assert a.lxc_state("life", "web") == "RUNNING"
    # Synced folder: the login user's file is the developer's on the host; guest root's is
    # an id of the user's range (nobody's on the host), never root's.
    assert (project / "by-login-user").read_text() == "tapers\n"
    assert (project / "by-login-user").stat().st_uid == a.account.pw_uid
    assert (project / "by-guest-root").stat().st_uid == _sub_uid(a)
    assert a.tapers("ssh", "web", "-c", "cat /home/tapers/note.txt", cwd=project).ok().out == "from the host\n"
    assert a.tapers("ssh", "web", "-c", "cat /etc/by-ansible", cwd=project).ok().out == "by ansible\n"
    # The login user is the developer here, and the project folder theirs; `.tapers/` is
    # not the machine's to read or write all the same (group_vars planted beside the
    # inventory there would make a play run on the host; the key logs in everywhere).
    planted = a.tapers("ssh", "web", "-c", "cat /tapers/.tapers/id_ed25519; mkdir /tapers/.tapers/group_vars",
                       cwd=project)
    assert planted.code != 0 and "No such file" in planted.err and "Read-only" in planted.err
    assert not (project / ".tapers" / "group_vars").exists()
    status = json.loads(a.tapers("status", "--json", cwd=project).ok().out)
    assert [m["state"] for m in status["machines"]] == ["running"]
    assert status["machines"][0]["address"].startswith("10.98.")  # on the user's own network

    _echo_servers(a, project)
    wait_for(lambda: _answers(_tcp, tcp_port), 20, "the forwarded TCP port answering")
    assert _tcp(tcp_port) == b"tcp says hi"
    wait_for(lambda: _answers(_udp, udp_port), 20, "the forwarded UDP port answering")
    assert _udp(udp_port) == b"udp says hi"

    limit = f"lxc-cgroup -P {a.machines} -n {a.container('life', 'web')} memory.limit_in_bytes"
    assert int(a.sh(limit).ok().out) == 256 * 1024 * 1024
    a.tapers("limits", "web", "--memory", "300M", cwd=project).ok()  # changed live
    assert int(a.sh(limit).ok().out) == 300 * 1024 * 1024

    a.tapers("suspend", cwd=project).ok()
    assert a.lxc_state("life", "web") == "FROZEN"
    a.tapers("resume", cwd=project).ok()
    assert a.lxc_state("life", "web") == "RUNNING"

    a.tapers("snapshot", "save", "web", "clean", cwd=project).ok()
    a.tapers("ssh", "web", "-c", "touch /home/tapers/after-snapshot", cwd=project).ok()
    a.tapers("snapshot", "restore", "web", "clean", cwd=project).ok()
    listed = a.tapers("ssh", "web", "-c", "ls /home/tapers", cwd=project).ok().out.split()
    assert "note.txt" in listed and "after-snapshot" not in listed

    # The machine plants code in the project folder where the user runs tapers: none of it
    # runs on the host, neither in the user's id map (machine files, boxes) nor as the user.
    marker = Path(f"/tmp/tapers-{RUN_ID}-planted")
    plant = "; ".join(f"mkdir -p /tapers/{p} && echo \"open('{marker}', 'a').write('{p}')\" > /tapers/{p}/__init__.py"
                      for p in ("tapers", "typer", "pickle", "json"))
    a.tapers("ssh", "web", "-c", plant, cwd=project).ok()
    a.tapers("reload", cwd=project).ok()
    a.tapers("box", "verify", cwd=project).ok()
    assert not marker.exists(), f"code a machine planted ran on the host: {marker.read_text()}"

    a.tapers("halt", cwd=project).ok()
    assert a.lxc_state("life", "web") == "STOPPED"
    assert not _answers(_tcp, tcp_port), "a halted machine's port is still forwarded"

    # A box made of the machine carries its own ids (root's files are 0's), not the host's.
    a.tapers("package", "web", "-o", str(a.home / "web.box"), cwd=project).ok()
    listing = subprocess.run(["tar", "-tvzf", str(a.home / "web.box"), "--numeric-owner", "rootfs/etc/shadow",
                              "rootfs/etc/by-ansible"], capture_output=True, text=True, check=True).stdout
    assert [line.split()[1] for line in listing.splitlines()] == ["0/42", "0/0"], listing
    up = a.sh(f"cd {shlex.quote(str(project))} && TAPERS_PROFILE=1 {shlex.quote(a.python)} -P -m tapers up").ok()
    assert a.lxc_state("life", "web") == "RUNNING"
    # Whether the machine accepts logins yet is seen from the host, as for root's: no SSH login needed.
    assert "web: wait until it accepts logins" in up.err and "log in over SSH" not in up.err, up.err
    assert a.tapers("ssh", "web", "-c", "echo logged-in", cwd=project).ok().out == "logged-in\n"
    a.tapers("destroy", "-f", cwd=project).ok()
    assert a.lxc_state("life", "web") == "MISSING"
    assert not (a.machines / a.container("life", "web")).exists()
    assert not _answers(_tcp, tcp_port)


def test_what_only_root_may_do_is_refused_for_a_user_before_anything_is_made(users: Users) -> None:
    a = users.a
    low = a.project("low", "machines:\n  web:\n    networks:\n      - forwarded_port: {guest: 80, host: 80}\n")
    up = a.tapers("up", cwd=low)
    assert up.code != 0 and "below 1024" in up.err and "Traceback" not in up.err, up.err
    assert a.lxc_state("low", "web") == "MISSING"

    privileged = a.project("priv", "machines:\n  web: {privileged: true}\n")
    up = a.tapers("up", cwd=privileged)
    assert up.code != 0 and "only root may make one" in up.err, up.err
    assert a.lxc_state("priv", "web") == "MISSING"


def test_users_cannot_reach_each_others_machines(users: Users) -> None:
    a, b = users.a, users.b
    mine = a.project("iso", "machines:\n  web: {}\n")
    theirs = b.project("iso", "machines:\n  web: {}\n")
    a.tapers("up", cwd=mine).ok()
    b.tapers("up", cwd=theirs).ok()
    a_ip = json.loads(a.tapers("status", "--json", cwd=mine).ok().out)["machines"][0]["address"]

    # Root sees both users' machines (each listed by that user's own tapers); each user only theirs.
    everyone = json.loads(root_tapers(("global-status", "--json")).ok().out)
    assert {(row["user"], row["container"]) for row in everyone} >= {(a.name, a.container("iso", "web")),
                                                                       (b.name, b.container("iso", "web"))}
    mine_only = json.loads(b.tapers("global-status", "--json").ok().out)
    assert [row["container"] for row in mine_only] == [b.container("iso", "web")]

    # b can't see, stop, enter or ssh into a's machine.
    container = a.container("iso", "web")
    assert b.sh(f"ls {a.machines}").code != 0
    assert b.sh(f"lxc-stop -P {a.machines} -n {container}").code != 0
    assert b.sh(f"lxc-attach -P {a.machines} -n {container} -- true").code != 0
    assert b.sh(f"cat {mine}/.tapers/id_ed25519").code != 0
    assert a.lxc_state("iso", "web") == "RUNNING"

    # b's machine can't open a connection to a's, not even with an address of a's network.
    probe = f"timeout 3 bash -c '</dev/tcp/{a_ip}/22'"
    assert b.tapers("ssh", "web", "-c", probe, cwd=theirs).code != 0
    spoof = f"sudo ip addr add {a_ip.rsplit('.', 1)[0]}.250/32 dev eth0 && {probe}"
    assert b.tapers("ssh", "web", "-c", spoof, cwd=theirs).code != 0
    with socket.create_connection((a_ip, 22), timeout=3) as s:  # the host's root reaches it
        assert s.recv(4) == b"SSH-"
    assert a.sh(probe).code == 0  # and so does its user; another user's shell doesn't
    assert b.sh(probe).code != 0

    # b was allowed one network interface: a second machine is refused, with the reason.
    b.project("iso", "machines:\n  web: {}\n  two: {}\n")
    up = b.tapers("up", cwd=theirs)
    assert up.code != 0 and "--nics" in up.err + up.out, up.err
    assert b.lxc_state("iso", "two") != "RUNNING"

    # b can't put a network interface on a's bridge, even by asking LXC's helper directly.
    raw = b.sh("unshare --user --map-root-user --net sleep 30 & holder=$!; "
               'while [ "$(readlink /proc/$holder/ns/net)" = "$(readlink /proc/self/ns/net)" ]; do :; done; '
               f"/usr/libexec/lxc/lxc-user-nic create /tmp x $holder veth tpu{a.account.pw_uid} eth9; "
               "code=$?; kill $holder; exit $code")
    assert raw.code != 0 and "Quota reached" in raw.err, raw.err
    a.tapers("destroy", "-f", cwd=mine).ok()
    b.tapers("destroy", "-f", cwd=theirs).ok()


def test_a_user_builds_a_box_without_root(users: Users) -> None:
    """mmdebstrap in the user's id map, from the Debian mirror (as root's build does)."""
    b = users.b
    b.tapers("box", "build", BOX, "--force", timeout=900).ok()
    versions = [line.split()[1] for line in b.tapers("box", "list").ok().out.splitlines()[1:]]
    assert len(versions) == 2, versions  # the one added at setup, and the one built now
    project = b.project("built", "machines:\n  web: {}\n")
    b.tapers("up", cwd=project).ok()
    status = json.loads(b.tapers("status", "--json", cwd=project).ok().out)["machines"][0]
    assert status["box"] == f"{BOX}@{max(versions)}"
    assert b.tapers("ssh", "web", "-c", "ping -c1 -W2 $(ip route | awk '/default/ {print $3}') >/dev/null && echo pinged", cwd=project).ok().out \
        == "pinged\n"  # and file capabilities survived the build (ping's cap_net_raw)
    b.tapers("destroy", "-f", cwd=project).ok()


def test_a_users_new_machines_start_from_their_provisioning_cache(users: Users) -> None:
    a = users.a
    project = a.project("cached", """\
machines:
  web:
    provision:
      - shell: "echo %s > /opt/one; cp /usr/bin/ping /opt/ping2; setcap cap_net_raw+ep /opt/ping2; rm -rf /usr/share/doc/bash"
      - shell: {inline: "echo two > /home/tapers/two", privileged: false}
""" % RUN_ID)
    layers = a.home / ".cache" / "tapers" / "layers"
    a.env["TAPERS_CACHE_MAX_SIZE"] = "2G"
    try:
        first = a.tapers("up", cwd=project).ok().out
        assert first.count("kept in the provisioning cache") == 2, first
        assert len([p for p in layers.iterdir() if not p.name.startswith(".")]) == 2
        assert layers.stat().st_uid == a.account.pw_uid and stat.S_IMODE(layers.stat().st_mode) == 0o700
        a.tapers("destroy", "-f", cwd=project).ok()
        again = a.tapers("up", cwd=project).ok().out
        assert "| provision step" not in again and "steps 1-2 from the provisioning cache" in again, again
        seen = a.tapers("ssh", "web", "-c", "cat /opt/one /home/tapers/two; stat -c %U /home/tapers/two; "
                        "/usr/sbin/getcap /opt/ping2; ls /usr/share/doc/bash 2>&1; true", cwd=project).ok().out
        assert seen.splitlines()[:3] == [RUN_ID, "two", "tapers"], seen
        assert "cap_net_raw=ep" in seen and "No such file" in seen, seen
        a.tapers("destroy", "-f", cwd=project).ok()
        a.tapers("cache", "clear").ok()  # its files are their machines' ids: removed all the same
        assert [p.name for p in layers.iterdir()] == [".lock"]
    finally:
        a.env["TAPERS_CACHE_MAX_SIZE"] = "0"
        a.tapers("destroy", "-f", cwd=project)


def test_a_users_private_network_is_theirs_alone(users: Users) -> None:
    a, b = users.a, users.b
    taperfile = "machines:\n  one:\n    networks: [{private: {ip: 192.168.213.10}}]\n" \
                "  two:\n    networks: [{private: {ip: 192.168.213.11}}]\n"
    project = a.project("private", taperfile)
    a.tapers("up", cwd=project).ok()
    a.tapers("ssh", "one", "-c", "ping -c1 -W2 192.168.213.11", cwd=project).ok()
    two = json.loads(a.tapers("status", "--json", cwd=project).ok().out)["machines"][1]["address"]
    a.tapers("ssh", "one", "-c", f"ping -c1 -W2 {two}", cwd=project).ok()  # and on their NAT network
    with socket.create_connection(("192.168.213.10", 22), timeout=3) as s:  # host-only: the host reaches it
        assert s.recv(4) == b"SSH-"

    # Another user may neither be given a's range nor use it.
    granted = Path(f"/etc/tapers/users/{b.name}.json").read_text()
    refused = root_tapers(("host", "setup", "--user", b.name, "--private", PRIVATE))
    assert refused.code != 0 and "overlaps" in refused.err and a.name in refused.err, refused.err
    assert Path(f"/etc/tapers/users/{b.name}.json").read_text() == granted
    theirs = b.project("private", "machines:\n  web:\n    networks: [{private: {ip: 192.168.213.20}}]\n")
    up = b.tapers("up", cwd=theirs)
    assert up.code != 0 and "not in a range you may use" in up.err and "--private 192.168.213.0/24" in up.err, up.err
    assert b.lxc_state("private", "web") == "MISSING"
    a.tapers("destroy", "-f", cwd=project).ok()


def test_a_group_is_set_up_member_by_member(users: Users) -> None:
    """`host setup --group`: its members now; `host restore` (the boot hook runs it) sets up
    those who join later and takes the grant back from those who leave."""
    a, c, group = users.a, users.c, f"tpg{RUN_ID}"
    d = HostUser(f"tp{RUN_ID}d", dict(c.env), c.python, c.bin)
    record = Path(f"/etc/tapers/groups/{group}.json")
    subprocess.run(["groupadd", group], check=True)
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", d.name], check=True, capture_output=True)
    try:
        subprocess.run(["usermod", "-aG", group, c.name], check=True)
        root_tapers(("host", "setup", "--group", group)).ok()
        assert record.exists() and json.loads(Path(f"/etc/tapers/users/{c.name}.json").read_text())["group"] == group
        assert c.tapers("doctor").code == 0
        given = [line for line in Path("/etc/subuid").read_text().splitlines() if line.startswith(f"{c.name}:")]
        assert len(given) == 1, "setup gave c no subordinate ids"
        c.tapers("box", "add", BOX, str(Path(f"/var/tmp/tapers-{RUN_ID}-box.tar")), "--from-rootfs").ok()

        # d joins: their tapers names the command that sets them up; restore does it.
        subprocess.run(["usermod", "-aG", group, d.name], check=True)
        refused = d.tapers("doctor")
        assert refused.code != 0 and f"sudo tapers host setup --group {group}" in refused.out, refused.out
        restored = root_tapers(("host", "restore")).ok()
        assert f"user `{d.name}`: bridge" in restored.out and f"(group `{group}`)" in restored.out, restored.out
        assert d.tapers("doctor").code == 0

        # a, set up by name, joins and leaves: a's grant is a's own, never the group's to take.
        subprocess.run(["usermod", "-aG", group, a.name], check=True)
        root_tapers(("host", "restore")).ok()
        subprocess.run(["gpasswd", "-d", a.name, group], check=True, capture_output=True)
        # c leaves: restore takes c's grant back, and keeps the ids c's box is owned by (says so).
        subprocess.run(["gpasswd", "-d", c.name, group], check=True, capture_output=True)
        restored = root_tapers(("host", "restore")).ok()
        assert f"user `{c.name}` left the group" in restored.out and given[0] in restored.out, restored.out
        assert f"user `{a.name}` left" not in restored.out
        assert not Path(f"/etc/tapers/users/{c.name}.json").exists() and c.tapers("doctor").code != 0
        assert given[0] in Path("/etc/subuid").read_text()
        assert a.tapers("doctor").code == 0 and d.tapers("doctor").code == 0
        assert json.loads(Path(f"/etc/tapers/users/{a.name}.json").read_text())["group"] == ""

        # teardown --group takes back what the group gave (d), never a's.
        down = root_tapers(("host", "teardown", "--group", group)).ok()
        assert f"user `{d.name}` no longer runs machines here" in down.out and a.name not in down.out, down.out
        assert not record.exists() and not Path(f"/etc/tapers/users/{d.name}.json").exists()
        assert d.tapers("doctor").code != 0 and a.tapers("doctor").code == 0
        c.tapers("box", "remove", BOX).ok()
        start, count = given[0].split(":")[1:]
        span = f"{start}-{int(start) + int(count) - 1}"  # setup gives the same range of uids and gids
        subprocess.run(["usermod", "--del-subuids", span, "--del-subgids", span, c.name], check=True)
    finally:
        if record.exists():
            root_tapers(("host", "teardown", "--group", group, "--force"))
        for user in (c, d):
            if Path(f"/etc/tapers/users/{user.name}.json").exists():
                root_tapers(("host", "teardown", "--user", user.name, "--force"))
        c.tapers("box", "remove", BOX)  # (gone already, unless the test stopped half-way)
        for line in Path("/etc/subuid").read_text().splitlines():  # what setup gave c and kept for the box
            if line.startswith(f"{c.name}:"):
                start, count = line.split(":")[1:]
                span = f"{start}-{int(start) + int(count) - 1}"
                subprocess.run(["usermod", "--del-subuids", span, "--del-subgids", span, c.name], capture_output=True)
        subprocess.run(["gpasswd", "-d", a.name, group], capture_output=True)
        subprocess.run(["groupdel", group], capture_output=True)
        subprocess.run(["userdel", "-r", d.name], capture_output=True)


def test_after_a_reboot_the_boot_hook_makes_the_setup_again(users: Users) -> None:
    from tapers.backend.liblxc import delegation

    a = users.a
    hook = Path("/etc/systemd/system/tapers-host.service")
    hook = hook if hook.exists() else Path("/etc/init.d/tapers-host")
    assert hook.exists() and "host restore" in hook.read_text()
    # What a reboot takes from tapers: everything the kernel kept (bridges, rules, cgroups).
    for user in (users.a, users.b):
        subprocess.run(["ip", "link", "delete", f"tpu{user.account.pw_uid}"], check=True)
    subprocess.run(["ip", "link", "delete", "tpvc0a8d5"], check=True)  # a's private 192.168.213.0/24
    for user in (users.a, users.b):
        assert delegation.undelegate(user.name) == []
    subprocess.run(["nft", "delete", "table", "ip", "tapers_users"], check=True)

    fix = f"sudo tapers host setup --user {a.name}"
    doctor = a.tapers("doctor")
    assert doctor.code != 0 and "FAIL  your bridge" in doctor.out and fix in doctor.out, doctor.out
    project = a.project("reboot", "machines:\n  web: {}\n")
    up = a.tapers("up", cwd=project)
    assert up.code != 0 and fix in up.err and a.lxc_state("reboot", "web") == "MISSING", up.err

    boot = ["systemctl", "start", hook.name] if hook.suffix == ".service" else [str(hook), "start"]
    subprocess.run(boot, check=True, capture_output=True)
    assert a.tapers("doctor").code == 0
    a.tapers("up", cwd=project).ok()
    assert a.tapers("ssh", "web", "-c", "echo back", cwd=project).ok().out == "back\n"
    assert Path("/sys/class/net/tpvc0a8d5").exists()
    a.tapers("destroy", "-f", cwd=project).ok()


def test_zz_host_teardown_puts_the_host_back_as_it_was(users: Users) -> None:
    for user in (users.a, users.b):
        for project in user.home.glob("*/Taperfile.yaml"):
            user.tapers("destroy", "-f", cwd=project.parent)
        root_tapers(("host", "teardown", "--user", user.name)).ok()
    assert host_state() == users.before
    assert users.a.tapers("doctor").code != 0

"""`tapers ssh` with OpenSSH reads tapers' config and known_hosts from private copies: the
copies in `.tapers/` are in the project folder, which a machine can write (a ProxyCommand
there would run on the host, as whoever runs tapers; a known host there would be trusted)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace

from tapers.cli import core_commands
from tapers.ssh.config import SshTarget


def test_openssh_gets_private_copies_of_the_config_and_known_hosts(monkeypatch, tmp_path: Path) -> None:
    seen = {}

    def run(argv, **_):
        config = Path(argv[2])
        text = config.read_text()
        known_hosts = Path(text.split("UserKnownHostsFile ")[1].split()[0].strip('"'))
        seen.update(argv=argv, text=text, known=known_hosts.read_text(), folder=config.parent,
                    mode=config.parent.stat().st_mode & 0o777)
        return subprocess.CompletedProcess(argv, 7)

    monkeypatch.setattr(subprocess, "run", run)
    project = SimpleNamespace(id="demo", paths=SimpleNamespace(private_key=tmp_path / ".tapers" / "id_ed25519"))
    target = SshTarget("web", "tapers-demo-web", "10.97.0.2", "tapers", "ssh-ed25519 AAAAC3Nza")
    code = core_commands.openssh(project, [target], ["-L", "8080:localhost:80", "web"])
    assert code == 7
    assert seen["argv"][:2] == ["ssh", "-F"] and seen["argv"][3:] == ["-L", "8080:localhost:80", "web"]
    assert "HostName 10.97.0.2" in seen["text"] and seen["known"] == "tapers-demo-web ssh-ed25519 AAAAC3Nza\n"
    assert seen["mode"] == 0o700 and ".tapers" not in str(seen["folder"])  # a folder only we can read
    assert not seen["folder"].exists()  # removed after ssh ended


def test_without_openssh_there_is_no_exit_code(monkeypatch, tmp_path: Path) -> None:
    def run(argv, **_):
        raise FileNotFoundError(argv[0])

    monkeypatch.setattr(subprocess, "run", run)
    project = SimpleNamespace(id="demo", paths=SimpleNamespace(private_key=tmp_path / "key"))
    assert core_commands.openssh(project, [], ["web"]) is None

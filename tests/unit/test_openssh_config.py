"""`tapers ssh` with OpenSSH reads tapers' config from a private copy: the copy in
`.tapers/` is in the project folder, which a machine can write (a ProxyCommand there would
run on the host, as whoever runs tapers)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tapers.cli import access_cmd


def test_openssh_gets_a_private_copy_of_the_config(monkeypatch, tmp_path: Path) -> None:
    seen = {}

    def run(argv, **_):
        config = Path(argv[2])
        seen.update(argv=argv, text=config.read_text(), mode=config.stat().st_mode & 0o777, path=config)
        return subprocess.CompletedProcess(argv, 7)

    monkeypatch.setattr(subprocess, "run", run)
    code = access_cmd._openssh("Host web\n  HostName 10.97.0.2\n", ["-L", "8080:localhost:80", "web"])
    assert code == 7
    assert seen["argv"][:2] == ["ssh", "-F"] and seen["argv"][3:] == ["-L", "8080:localhost:80", "web"]
    assert seen["text"] == "Host web\n  HostName 10.97.0.2\n" and seen["mode"] == 0o600
    assert ".tapers" not in str(seen["path"]) and not seen["path"].exists()  # removed after ssh ended

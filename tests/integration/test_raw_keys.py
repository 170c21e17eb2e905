"""Raw engine keys (`lxc:` on liblxc, `lxd:` on LXD) reach the machine, after tapers' own
settings; changing them restarts it; keys that would act on the host are refused before
anything is made."""

from __future__ import annotations

from pathlib import Path

import pytest


def _raw(backend_name: str, value: str) -> str:
    if backend_name == "liblxc":
        return f"    lxc:\n      lxc.environment: TAPERS_RAW={value}\n      lxc.sysctl.net.ipv4.ip_forward: 1\n"
    return f"    lxd:\n      config:\n        environment.TAPERS_RAW: {value}\n        linux.sysctl.net.ipv4.ip_forward: 1\n"


@pytest.mark.both_backends
def test_raw_keys_reach_the_machine_and_a_change_restarts_it(project, backend_name) -> None:
    project.write("machines:\n  web:\n" + _raw(backend_name, "first"))
    project.tapers("up").ok()
    environment = project.tapers("exec", "web", "--", "sh", "-c", "tr '\\0' '\\n' < /proc/1/environ").ok().out
    assert "TAPERS_RAW=first" in environment.splitlines()
    assert project.tapers("exec", "web", "--", "cat", "/proc/sys/net/ipv4/ip_forward").ok().out == "1\n"
    if backend_name == "liblxc":  # in the container's config, after tapers' own lines
        folder = Path("/var/lib/lxc") / project.container("web")
        assert (folder / "config").read_text().splitlines()[-1] == f"lxc.include = {folder / 'tapers-raw.conf'}"
        assert "lxc.environment = TAPERS_RAW=first" in (folder / "tapers-raw.conf").read_text()

    project.write("machines:\n  web:\n" + _raw(backend_name, "second"))
    assert "web: reconfigure" in project.tapers("plan").ok().out
    project.tapers("up").ok()
    environment = project.tapers("exec", "web", "--", "sh", "-c", "tr '\\0' '\\n' < /proc/1/environ").ok().out
    assert "TAPERS_RAW=second" in environment.splitlines() and "TAPERS_RAW=first" not in environment.splitlines()

    project.write("machines:\n  web: {}\n")  # taken away: gone from the machine too
    project.tapers("up").ok()
    environment = project.tapers("exec", "web", "--", "sh", "-c", "tr '\\0' '\\n' < /proc/1/environ").ok().out
    assert not [line for line in environment.splitlines() if line.startswith("TAPERS_RAW=")]


def test_a_raw_key_that_acts_on_the_host_is_refused_before_anything_is_made(project) -> None:
    marker = Path(f"/tmp/{project.name}-hook-ran")
    project.write(f"machines:\n  web:\n    lxc:\n      lxc.hook.pre-start: /bin/touch {marker}\n"
                  "    lxd:\n      devices:\n        host: {type: disk, source: /, path: /host}\n")
    refused = project.tapers("up")
    assert refused.code == 3
    assert "machines.web.lxc.lxc.hook.pre-start: `lxc.hook.pre-start` runs a program on the host, as root; refused" \
        in refused.err
    assert "machines.web.lxd.devices.host: the device is a `disk` device, which reaches the host" in refused.err
    assert project.lxc_state("web") == "MISSING"
    assert not marker.exists()

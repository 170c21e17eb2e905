"""What only the LXD backend has: its settings, certificate pinning, doctor, placement."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import LXD_CONFIG


@pytest.fixture
def lxd_project(project, backend_name, lxd_view):
    assert backend_name == "lxd"
    return project


pytestmark = pytest.mark.parametrize("backend_name", ["lxd"], indirect=True)


def test_doctor_checks_the_endpoint_trust_pool_and_members(lxd_project) -> None:
    doctor = lxd_project.tapers("doctor", "--backend", "lxd").ok()
    for line in ("LXD endpoint https://127.0.0.1:8443", "(server certificate pinned)", "client trusted: yes",
                 "storage pool `default`: exists", "cluster members: 1 member(s), all online"):
        assert line in doctor.out, doctor.out


def test_another_server_certificate_is_refused_whatever_the_environment_says(lxd_project, tmp_path) -> None:
    lxd_project.write("machines:\n  web: {}\n")
    settings = Path(LXD_CONFIG).read_text()
    wrong = Path("/var/lib/lxd/server.crt")  # a real certificate, but not the one the endpoint presents
    assert wrong.read_bytes() != Path("/var/lib/lxd/cluster.crt").read_bytes()
    pinned_wrong = tmp_path / "config.yaml"
    pinned_wrong.write_text("\n".join(
        f"  server_cert: {wrong}" if line.strip().startswith("server_cert:") else line for line in settings.splitlines()
    ) + "\n")
    lxd_project.env["TAPERS_CONFIG"] = str(pinned_wrong)
    refused = lxd_project.tapers("status")
    assert refused.code == 1 and "Fingerprints did not match" in refused.err
    assert "FAIL  LXD endpoint" in lxd_project.tapers("doctor").out

    # REQUESTS_CA_BUNDLE and a proxy in the environment change nothing: the pin holds, the
    # right certificate works, and nothing goes through the (closed) proxy
    lxd_project.env.update(REQUESTS_CA_BUNDLE="/etc/ssl/certs/ca-certificates.crt",
                           HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    assert lxd_project.tapers("status").code == 1
    lxd_project.env["TAPERS_CONFIG"] = LXD_CONFIG
    assert "not created" in lxd_project.tapers("status").ok().out


def test_placement_puts_the_machine_on_the_member(lxd_project) -> None:
    lxd_project.write("machines:\n  web: {placement: {member: tapers-ci}}\n")
    lxd_project.tapers("up").ok()
    data = lxd_project.view._get(lxd_project.container("web"))
    assert data["location"] == "tapers-ci"
    lxd_project.write("machines:\n  web: {placement: {member: no-such-member}}\n")
    lxd_project.tapers("destroy", "-f").ok()
    failed = lxd_project.tapers("up")
    assert failed.code == 1 and "no-such-member" in failed.err


def test_unknown_lxd_settings_are_named(lxd_project, tmp_path) -> None:
    lxd_project.write("machines:\n  web: {}\n")
    config = tmp_path / "config.yaml"
    config.write_text("backend: lxd\nlxd:\n  endpont: https://127.0.0.1:8443\n")
    lxd_project.env["TAPERS_CONFIG"] = str(config)
    wrong = lxd_project.tapers("status")
    assert wrong.code == 2 and "unknown `lxd:` setting `endpont`" in wrong.err

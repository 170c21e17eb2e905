"""`nesting: true`: containers run inside a machine (whatever can be shown offline: a
container made with unshare, as its login user)."""

from __future__ import annotations

import pytest

# A container in all but its files: its own users (root mapped to the login user), process
# ids (it is pid 1), mounts with its own /proc, hostname and network.
NESTED = ("unshare --user --map-root-user --pid --mount --uts --net --fork --mount-proc "
          "sh -c 'hostname inner && hostname && echo $$ && cat /proc/1/comm'")


@pytest.mark.both_backends
def test_a_nesting_machine_runs_containers_of_its_own(project) -> None:
    project.write("machines:\n  web: {}\n")
    project.tapers("up").ok()
    refused = project.tapers("ssh", "-c", NESTED)
    assert refused.code != 0 and "Operation not permitted" in refused.err  # its /proc is LXC's, overmounted

    project.write("machines:\n  web: {nesting: true}\n")
    assert "web: reconfigure (nesting false -> true)  [restart]" in project.tapers("plan").ok().out
    project.tapers("up").ok()
    assert project.tapers("ssh", "-c", NESTED).ok().out == "inner\n1\nsh\n"
    assert project.tapers("plan").ok().out.strip() == "nothing to do"


def test_docker_runs_in_a_nesting_machine(project) -> None:
    """Docker from Debian in a box; its image made from the machine's own files (no registry)."""
    with project.built_box("debian/bookworm", "docker.io") as name:
        project.write(f"machines:\n  web: {{box: {name}, nesting: true}}\n")
        project.tapers("up").ok()
        files = ("bin lib lib64 usr/bin/dash usr/lib/x86_64-linux-gnu/libc.so.6 usr/lib64/ld-linux-x86-64.so.2 "
                 "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        out = project.tapers("ssh", "-c", f"sudo tar -C / -c {files} | sudo docker import - tiny >/dev/null && "
                             "sudo docker run --rm --network none tiny /bin/dash -c 'echo hello from docker, pid $$'").ok().out
        assert out == "hello from docker, pid 1\n"

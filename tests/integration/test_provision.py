"""Provisioning on real containers: what ran is read back from files in the guests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def guest(project, machine: str, command: str) -> str:
    return project.tapers("ssh", machine, "-c", command).ok().out


@pytest.mark.both_backends
def test_shell_steps_like_vagrant_spec(project) -> None:
    """vagrant-spec's shell provisioner scenario: inline, path, args with a space, privileged or not."""
    (project.root / "scripts").mkdir()
    (project.root / "scripts" / "args.sh").write_text(
        '#!/bin/bash\nprintf "%s\\n" "$#" "$@" > /tmp/args\nwhoami > /tmp/path-user\necho "env=$APP_ENV"\n'
    )
    project.write(
        "machines:\n"
        "  web:\n"
        "    provision:\n"
        "      - shell: whoami > /tmp/inline-user\n"
        "      - shell:\n"
        "          path: scripts/args.sh\n"
        "          args: [hello, \"two words\"]\n"
        "          env: {APP_ENV: dev}\n"
        "          privileged: false\n"
        "      - name: as-root-from-path\n"
        "        shell: {path: scripts/args.sh, args: [x]}\n"
    )
    up = project.tapers("up").ok()
    assert "web      | env=dev" in up.out  # output streams, prefixed with the machine
    assert guest(project, "web", "cat /tmp/inline-user") == "root\n"
    assert guest(project, "web", "cat /tmp/args") == "1\nx\n"  # the last step ran last
    assert guest(project, "web", "cat /tmp/path-user") == "root\n"
    project.tapers("provision", "--with", "2").ok()
    assert guest(project, "web", "cat /tmp/args") == "2\nhello\ntwo words\n"
    assert guest(project, "web", "cat /tmp/path-user") == "tapers\n"
    logs = list((project.root / ".tapers" / "logs").glob("*-web.log"))
    assert logs and any("env=dev" in log.read_text() for log in logs)


@pytest.mark.both_backends
def test_file_steps(project) -> None:
    conf = project.root / "conf"
    (conf / "bin").mkdir(parents=True)
    (conf / "app.ini").write_text("[app]\nname = demo\n")
    (conf / "bin" / "tool").write_text("#!/bin/sh\necho tool-ran\n")
    (conf / "bin" / "tool").chmod(0o755)
    project.write(
        "machines:\n"
        "  web:\n"
        "    provision:\n"
        "      - file: {source: conf/app.ini, destination: /etc/app/deep/app.ini}\n"
        "      - file: {source: conf, destination: /home/tapers/conf}\n"
    )
    project.tapers("up").ok()
    assert guest(project, "web", "cat /etc/app/deep/app.ini") == "[app]\nname = demo\n"
    assert guest(project, "web", "stat -c %U /etc/app/deep/app.ini") == "root\n"
    assert guest(project, "web", "/home/tapers/conf/bin/tool") == "tool-ran\n"
    assert guest(project, "web", "stat -c %U /home/tapers/conf/app.ini") == "tapers\n"


@pytest.mark.both_backends
def test_runs_only_what_should_run(project) -> None:
    (project.root / "setup.sh").write_text("echo v1 >> /tmp/setup-runs\n")
    project.write(
        "machines:\n"
        "  web:\n"
        "    provision:\n"
        "      - name: setup\n"
        "        shell: {path: setup.sh}\n"
        "      - name: always\n"
        "        shell: echo run >> /tmp/always-runs\n"
        "        run: always\n"
        "      - name: seed\n"
        "        shell: echo seeded > /tmp/seed\n"
        "        run: never\n"
    )
    project.tapers("up").ok()
    assert guest(project, "web", "cat /tmp/setup-runs; cat /tmp/always-runs") == "v1\nrun\n"
    assert guest(project, "web", "test -e /tmp/seed && echo yes || echo no") == "no\n"

    second = project.tapers("up").ok()
    assert 'provision step 2 "always" (run: always)' in second.out and "step 1" not in second.out
    assert guest(project, "web", "cat /tmp/setup-runs; cat /tmp/always-runs") == "v1\nrun\nrun\n"

    (project.root / "setup.sh").write_text("echo v2 >> /tmp/setup-runs\n")
    assert 'web: provision step 1 "setup" (setup.sh changed)' in project.tapers("plan").ok().out
    project.tapers("up").ok()
    assert guest(project, "web", "cat /tmp/setup-runs") == "v1\nv2\n"

    project.tapers("up", "--no-provision").ok()
    assert guest(project, "web", "wc -l < /tmp/always-runs") == "3\n"

    project.tapers("provision", "--with", "seed").ok()
    assert guest(project, "web", "cat /tmp/seed") == "seeded\n"


@pytest.mark.both_backends
def test_a_failing_step_stops_names_itself_and_is_retried(project) -> None:
    project.write(
        "machines:\n"
        "  web:\n"
        "    provision:\n"
        "      - {name: first, shell: echo first >> /tmp/ran}\n"
        "      - name: migrate\n"
        "        shell: |\n"
        "          echo migrating\n"
        "          test -e /tmp/fixed || { echo 'no database' >&2; exit 3; }\n"
        "          echo migrate >> /tmp/ran\n"
        "      - {name: last, shell: echo last >> /tmp/ran}\n"
    )
    failed = project.tapers("up")
    assert failed.code == 1
    assert 'web: step 2 "migrate" (shell) failed with exit code 3' in failed.err
    assert "no database" in failed.err  # the last lines of its output
    assert project.lxc_state("web") == "RUNNING"  # left running for debugging
    assert guest(project, "web", "cat /tmp/ran") == "first\n"
    guest(project, "web", "touch /tmp/fixed")
    project.tapers("up").ok()
    assert guest(project, "web", "cat /tmp/ran") == "first\nmigrate\nlast\n"


@pytest.mark.both_backends
def test_steps_that_reboot(project) -> None:
    # /run is emptied by every boot: a step sees whether it runs in the boot of the step before.
    mark = "{ test -e /run/seen && echo same || echo new; } >> /var/tmp/boots; touch /run/seen"
    project.write(
        "machines:\n"
        "  web:\n"
        "    provision:\n"
        f"      - shell: '{mark}; reboot'\n"
        f"      - shell: '{mark}'\n"
        "        reboot: true\n"
        f"      - shell: '{mark}'\n"
    )
    up = project.tapers("up", timeout=300).ok()
    assert up.out.count("rebooted; waiting for SSH") == 2
    assert guest(project, "web", "cat /var/tmp/boots").split() == ["new", "new", "new"]


@pytest.mark.both_backends
def test_depends_on_orders_provisioning(project) -> None:
    project.write(
        "machines:\n"
        "  web:\n"
        "    depends_on: [db]\n"
        "    provision:\n"
        "      - shell: date +%s%N > /tmp/started\n"
        "  db:\n"
        "    provision:\n"
        "      - shell: sleep 0.5; date +%s%N > /tmp/finished\n"
    )
    project.tapers("up").ok()
    db_finished = int(guest(project, "db", "cat /tmp/finished"))
    web_started = int(guest(project, "web", "cat /tmp/started"))
    assert web_started >= db_finished


@pytest.mark.both_backends
def test_ansible_playbook_with_extra_vars_and_the_standalone_inventory(project) -> None:
    (project.root / "site.yml").write_text(
        "- hosts: webservers\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - copy: {dest: /tmp/from-ansible, content: \"role={{ role }} groups={{ group_names | join(',') }}\\n\"}\n"
        "    - copy: {dest: /etc/root-file, content: \"ok\\n\"}\n"
        "      become: true\n"
        "    - copy: {dest: /tmp/motd, content: \"{{ lookup('file', 'data/motd.txt') }}\"}\n"
    )
    (project.root / "data").mkdir()
    (project.root / "data" / "motd.txt").write_text("a file only `watch:` names\n")  # the scan can't see it
    project.write(
        "machines:\n"
        "  web:\n"
        "    provision:\n"
        "      - ansible:\n"
        "          playbook: site.yml\n"
        "          extra_vars: {role: frontend}\n"
        "          groups: {webservers: [web]}\n"
        "        watch: [data/*.txt]\n"
    )
    project.tapers("trust", "--yes").ok()
    project.tapers("up").ok()
    assert guest(project, "web", "cat /tmp/from-ansible /etc/root-file /tmp/motd") == \
        "role=frontend groups=webservers\nok\na file only `watch:` names"
    playbook = Path(sys.executable).parent / "ansible-playbook"
    guest(project, "web", "rm /tmp/from-ansible")
    standalone = subprocess.run(  # the machine's extra_vars are beside the inventory: it works alone
        [str(playbook), "-i", ".tapers/inventory", "site.yml"],
        cwd=project.root, capture_output=True, text=True, timeout=300,
        env={**os.environ, "LC_ALL": "C.UTF-8", "ANSIBLE_NOCOLOR": "1"},
    )
    assert standalone.returncode == 0, standalone.stdout + standalone.stderr
    assert guest(project, "web", "cat /tmp/from-ansible") == "role=frontend groups=webservers\n"


def test_ansible_requirements_from_local_archives_and_the_step_options(project) -> None:
    """A role tarball and a collection archive (built here: no Galaxy) installed into
    .tapers/ansible/ and used by the play; config_file, verbose and raw_arguments reach it."""
    galaxy = str(Path(sys.executable).parent / "ansible-galaxy")
    vendor = project.root / "vendor"
    role = vendor / "src" / "acme_role" / "tasks"
    role.mkdir(parents=True)
    (role / "main.yml").write_text("- copy: {dest: /tmp/from-role, content: \"role\\n\"}\n")
    (role.parent / "meta").mkdir()
    (role.parent / "meta" / "main.yml").write_text("galaxy_info: {author: tapers, description: a test role}\n")
    subprocess.run(["tar", "-czf", str(vendor / "acme_role.tar.gz"), "-C", str(vendor / "src"), "acme_role"], check=True)
    collection = vendor / "src" / "tools"
    (collection / "roles" / "hello" / "tasks").mkdir(parents=True)
    (collection / "galaxy.yml").write_text(
        "namespace: acme\nname: tools\nversion: 1.0.0\nreadme: README.md\nauthors: [tapers]\n")
    (collection / "README.md").write_text("tools\n")
    (collection / "roles" / "hello" / "tasks" / "main.yml").write_text(
        "- copy: {dest: /tmp/from-collection, content: \"collection\\n\"}\n")
    built = subprocess.run([galaxy, "collection", "build", str(collection), "--output-path", str(vendor)],
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stdout + built.stderr
    (project.root / "requirements.yml").write_text(
        "roles:\n  - {src: ./vendor/acme_role.tar.gz, name: acme_role}\n"
        "collections:\n  - {name: ./vendor/acme-tools-1.0.0.tar.gz, type: file}\n")
    (project.root / "conf").mkdir()
    (project.root / "conf" / "ansible.cfg").write_text("[defaults]\nforks = 3\n")
    (project.root / "site.yml").write_text(
        "- hosts: web\n  gather_facts: false\n  roles: [acme_role]\n"
        "  tasks:\n    - include_role: {name: acme.tools.hello}\n")
    project.write(
        "machines:\n  web:\n    provision:\n"
        "      - ansible: {playbook: site.yml, requirements: requirements.yml, config_file: conf/ansible.cfg,\n"
        "                  verbose: 1, raw_arguments: [--diff]}\n")
    project.tapers("trust", "--yes").ok()
    up = project.tapers("up").ok()
    assert guest(project, "web", "cat /tmp/from-role /tmp/from-collection") == "role\ncollection\n"
    # The play runs in a private copy of what it reads (the approved files), requirements
    # installed there: nothing of it is run from, or installed into, the project folder.
    assert "/project/conf/ansible.cfg as config file" in up.out and f"Using {project.root}/" not in up.out
    assert not (project.root / ".tapers/ansible").exists()
    assert "up to date" in project.tapers("status").ok().out

    # A new archive of the role: the step runs again, and the new role is installed and used.
    (role / "main.yml").write_text("- copy: {dest: /tmp/from-role, content: \"role 2\\n\"}\n")
    subprocess.run(["tar", "-czf", str(vendor / "acme_role.tar.gz"), "-C", str(vendor / "src"), "acme_role"], check=True)
    assert "web: provision step 1 (vendor/acme_role.tar.gz changed)" in project.tapers("plan").ok().out
    unapproved = project.tapers("up")  # what the play reads changed: approved again first
    assert unapproved.code == 1 and "haven't approved (or that changed since)" in unapproved.err
    project.tapers("trust", "--yes").ok()
    project.tapers("up").ok()
    assert guest(project, "web", "cat /tmp/from-role") == "role 2\n"


def test_missing_files_are_refused_before_anything_is_created(project) -> None:
    project.write("machines:\n  web:\n    provision:\n      - shell: {path: nowhere.sh}\n")
    result = project.tapers("up")
    assert result.code == 3
    assert "Taperfile.yaml:6:23: machines.web.provision[1].shell.path: `nowhere.sh` does not exist" in result.err
    assert project.lxc_state("web") == "MISSING"


def test_variables_from_dot_env_and_the_environment_reach_a_step(project) -> None:
    project.write(
        "machines:\n  web:\n    provision:\n"
        "      - shell: {inline: 'echo \"$GREETING $WHO\" > /tmp/vars', privileged: false,\n"
        "                env: {GREETING: \"${GREETING:-hi}\", WHO: \"${WHO:?set WHO in .env}\"}}\n")
    refused = project.tapers("up")
    assert refused.code == 3 and "the variable WHO is required: set WHO in .env" in refused.err
    assert project.lxc_state("web") == "MISSING"

    (project.root / ".env").write_text("WHO=team\nGREETING=hello\n")
    assert "GREETING: hello" in project.tapers("config").ok().out
    project.env["GREETING"] = "howdy"  # the environment wins over .env
    project.tapers("up").ok()
    assert guest(project, "web", "cat /tmp/vars") == "howdy team\n"
    del project.env["GREETING"]
    assert 'web: provision step 1 (env changed)  [reprovision]' in project.tapers("plan").ok().out


def test_on_a_terminal_up_shows_an_unapproved_play_and_asks(project) -> None:
    """A play runs on the host: `up` on a terminal shows it, asks, and on `y` goes on (the
    approval kept: the next `up` doesn't ask); on `n` nothing is made."""
    import pty

    from tests.integration.conftest import until_it_ends

    (project.root / "site.yml").write_text("- hosts: all\n  gather_facts: false\n  tasks:\n"
                                           "    - copy: {dest: /tmp/approved, content: \"yes\\n\"}\n")
    project.write("machines:\n  web:\n    provision:\n      - ansible: {playbook: site.yml}\n")

    def up_answering(answer: bytes) -> tuple[int, bytes]:
        pid, fd = pty.fork()
        if pid == 0:
            os.chdir(project.root)
            os.execve(sys.executable, [sys.executable, "-P", "-m", "tapers", "up"], project.env)
        seen, status = bytearray(), None
        try:
            status = until_it_ends(pid, fd, seen, 300, "`tapers up`", {b"Approve it and go on? [y/N]": answer + b"\r"})
        finally:
            if status is None:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            os.close(fd)
        return os.waitstatus_to_exitcode(status), bytes(seen)

    code, seen = up_answering(b"n")
    assert code == 1 and b"ansible-playbook site.yml" in seen and b"nothing approved, nothing done" in seen
    assert project.lxc_state("web") == "MISSING"
    code, seen = up_answering(b"y")
    assert code == 0, seen
    assert guest(project, "web", "cat /tmp/approved") == "yes\n"
    assert "up to date" in project.tapers("up").ok().out  # approved: not asked again

"""Triggers on real machines: a dump taken in the machine before it is destroyed lands in
the project folder; host commands run after `up`, as whoever runs tapers, once approved;
a failing trigger stops its machine's command, or not (`on_error: continue`)."""

from __future__ import annotations

import pytest

TRIGGERS = """\
machines:
  web:
    triggers:
      - name: dump
        before: destroy
        run_remote: {inline: "echo \\"rows of $(hostname)\\" > /tapers/dump.sql", privileged: false}
      - after: [up, reload]
        run: 'echo "$TAPERS_MACHINE $TAPERS_TRIGGER $(id -u)" >> host.log'
"""


@pytest.mark.both_backends
def test_a_dump_taken_before_destroy_lands_in_the_project(project) -> None:
    project.write(TRIGGERS)
    project.give_to_user()
    refused = project.tapers("up")
    assert refused.code == 1 and "haven't approved" in refused.err and "'echo \"$TAPERS_MACHINE" in refused.err
    assert project.lxc_state("web") == "MISSING", "nothing is made before the host commands are approved"
    assert not (project.root / "host.log").exists()

    unasked = project.tapers("trust")  # no terminal to ask on: nothing approved
    assert unasked.code == 1 and "nothing approved" in unasked.err and "--yes" in unasked.err
    assert project.tapers("up").code == 1
    trusted = project.tapers("trust", "--yes").ok()
    assert "`web` trigger 2, after up/reload: sh -c 'echo \"$TAPERS_MACHINE" in trusted.out
    up = project.tapers("up").ok()
    assert "run trigger 2 on the host (after up)" in up.out
    assert (project.root / "host.log").read_text() == "web after up 0\n"  # as the person running tapers (root here)
    project.tapers("up").ok()  # nothing to do: no trigger
    assert (project.root / "host.log").read_text() == "web after up 0\n"

    destroyed = project.tapers("destroy", "-f").ok()
    assert 'run trigger 1 "dump" in the machine (before destroy)' in destroyed.out
    assert (project.root / "dump.sql").read_text() == "rows of web\n"
    assert project.lxc_state("web") == "MISSING"


def test_a_failing_trigger_stops_its_machine_unless_told_to_go_on(project) -> None:
    project.write("""\
machines:
  web:
    triggers:
      - {name: check, before: halt, run_remote: "test -e /tmp/allowed-to-halt"}
      - {name: notify, after: halt, run: "echo notified; exit 7", on_error: continue}
""")
    project.tapers("trust", "--yes").ok()
    project.tapers("up").ok()

    refused = project.tapers("halt")
    assert refused.code == 1
    assert '`web` trigger 1 "check" (before halt, in the machine) failed with exit code 1' in refused.err
    assert project.lxc_state("web") == "RUNNING", "the halt went on after its trigger failed"

    project.tapers("ssh", "-c", "touch /tmp/allowed-to-halt").ok()
    halted = project.tapers("halt").ok()
    assert "notified" in halted.out
    assert 'trigger 2 "notify" failed; going on (on_error: continue)' in halted.out and "exit code 7" in halted.out
    assert project.lxc_state("web") == "STOPPED"

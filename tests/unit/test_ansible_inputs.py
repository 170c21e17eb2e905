"""What an ansible step reads, exactly: over a project laid out like a real one (roles from
an ansible.cfg roles_path and from roles/, a role dependency, included task files, vars
files, group_vars, a collection), each file's edit changes exactly the steps that read it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tapers.engine import step_inputs
from tapers.engine.plan import what_changed
from tapers.project import open_project
from tapers.provision import fingerprint_of

FILES = {
    "Taperfile.yaml": """\
version: 1
name: shop
machines:
  db:
    provision:
      - {name: db, ansible: {playbook: site-db.yml}}
  web:
    provision:
      - {name: web, ansible: {playbook: site-web.yml, extra_vars: {port: 80}}}
      - {name: dyn, ansible: {playbook: plays/dynamic.yml}}
      - {name: watched, ansible: {playbook: plays/dynamic.yml}, watch: ["plays/tasks/*.yml"]}
""",
    "ansible.cfg": "[defaults]\nroles_path = ./galaxy_roles\n",
    "site-db.yml": "- hosts: db\n  vars_files: [vars/db.yml]\n  roles: [postgres]\n",
    "site-web.yml": (
        "- hosts: web\n  roles:\n    - role: nginx\n  tasks:\n"
        "    - ansible.builtin.include_tasks: tasks/extra.yml\n"
        "    - include_role: {name: common}\n"
    ),
    "galaxy_roles/nginx/tasks/main.yml": "- debug: msg=nginx\n",
    "galaxy_roles/nginx/defaults/main.yml": "nginx_port: 80\n",
    "galaxy_roles/nginx/meta/main.yml": "dependencies:\n  - role: common\n",
    "galaxy_roles/postgres/tasks/main.yml": "- debug: msg=pg\n",
    "galaxy_roles/unused/tasks/main.yml": "- debug: msg=unused\n",
    "roles/common/tasks/main.yml": "- debug: msg=common\n",
    "tasks/extra.yml": "- import_tasks: more.yml\n",
    "tasks/more.yml": "- debug: msg=more\n",
    "vars/db.yml": "db_password: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6135\n",
    "group_vars/all.yml": "timezone: UTC\n",
    "collections/ansible_collections/acme/tools/MANIFEST.json": json.dumps({"collection_info": {"version": "1.0.0"}}),
    "plays/dynamic.yml": "- hosts: all\n  tasks:\n    - include_tasks: \"tasks/{{ flavour }}.yml\"\n",
    "plays/tasks/debian.yml": "- debug: msg=debian\n",
    "README.md": "not an input\n",
}


@pytest.fixture
def project(tmp_path: Path):
    for name, text in FILES.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return open_project(explicit=tmp_path / "Taperfile.yaml")


def prints(project) -> dict[tuple[str, str], str]:
    found = step_inputs(project, project.machines)
    return {(machine, key): fingerprint_of(step) for machine, steps in found.items() for key, step in steps.items()}


ALL_STEPS = {("db", "db"), ("web", "web"), ("web", "dyn"), ("web", "watched")}
DB, WEB = {("db", "db")}, {("web", "web")}


@pytest.mark.parametrize(("edited", "changed"), [
    ("galaxy_roles/nginx/defaults/main.yml", WEB),
    ("galaxy_roles/nginx/meta/main.yml", WEB),
    ("galaxy_roles/postgres/tasks/main.yml", DB),
    ("roles/common/tasks/main.yml", WEB),  # a dependency of nginx, and included by a task
    ("tasks/more.yml", WEB),  # imported by an included task file
    ("vars/db.yml", DB),
    ("site-db.yml", DB),
    ("site-web.yml", WEB),
    ("plays/tasks/debian.yml", {("web", "watched")}),  # only the step that watches it
    ("group_vars/all.yml", DB | WEB),
    ("ansible.cfg", ALL_STEPS),
    ("collections/ansible_collections/acme/tools/MANIFEST.json", DB | WEB),
    ("galaxy_roles/unused/tasks/main.yml", set()),
    ("README.md", set()),
    ("Taperfile.yaml", set()),  # a comment in it: the Taperfile's text is no step's input
])
def test_each_edit_changes_exactly_the_steps_that_read_it(project, edited: str, changed: set) -> None:
    before = prints(project)
    path = project.root / edited
    path.write_text(path.read_text() + ("\n" if edited.endswith(".json") else "\n# edited\n"))
    after = prints(open_project(explicit=project.root / "Taperfile.yaml"))
    assert {step for step in before if before[step] != after[step]} == changed


def test_plan_names_the_file_that_changed(project) -> None:
    before = step_inputs(project, project.machines)["web"]["web"]
    (project.root / "galaxy_roles/nginx/defaults/main.yml").write_text("nginx_port: 8080\n")
    (project.root / "tasks/more.yml").write_text("- debug: msg=changed\n")
    now = step_inputs(project, project.machines)["web"]["web"]
    assert what_changed(before, now) == "galaxy_roles/nginx/defaults/main.yml changed, and 1 more"
    assert what_changed(None, now) == "changed since the last run"  # recorded by an older tapers


def test_what_cannot_be_told_statically_is_said(project) -> None:
    from tapers.engine.plan import plan_up

    found = step_inputs(project, project.machines)
    assert "? `tasks/{{ flavour }}.yml` (in plays/dynamic.yml)" in found["web"]["dyn"]
    plan = plan_up(project.machines, _nothing(), "k", {"debian/bookworm"}, inputs=found)
    assert ('web: step 2 "dyn": can\'t tell what it reads from `tasks/{{ flavour }}.yml` (in plays/dynamic.yml); '
            "list such files under the step's `watch:`") in plan.notes
    assert not any('"watched"' in note for note in plan.notes)  # it has a `watch:`


def _nothing():
    from tapers.engine.observe import Observed

    return Observed()


def test_a_hostile_project_cannot_make_the_scan_read_or_recurse_without_bound(project) -> None:
    """Links to host files or devices are not read, include chains and role chains are
    bounded, and what wasn't read is said."""
    root = project.root
    (root / "ansible.cfg").unlink()
    (root / "ansible.cfg").symlink_to("/etc/shadow")
    manifest = root / "collections/ansible_collections/acme/tools/MANIFEST.json"
    manifest.unlink()
    manifest.symlink_to("/etc/passwd")
    (root / "vars/db.yml").unlink()
    (root / "vars/db.yml").symlink_to("/dev/zero")  # would never end
    for i in range(120):  # task files including the next, 120 deep
        (root / "tasks" / f"chain{i}.yml").write_text(f"- include_tasks: chain{i + 1}.yml\n")
    (root / "site-web.yml").write_text("- hosts: web\n  tasks:\n    - include_tasks: tasks/chain0.yml\n")
    found = step_inputs(project, project.machines)["web"]["web"]
    unresolved = [name for name in found if name.startswith("?")]
    assert any("ansible.cfg can't be read" in name for name in unresolved)
    assert "collections/ansible_collections/acme/tools/MANIFEST.json" not in found  # a link: not read
    assert any("nested more than 50 deep" in name for name in unresolved)
    assert "tasks/chain49.yml" in found and "tasks/chain60.yml" not in found
    assert not any("shadow" in name or "passwd" in name for name in found)
    assert "vars/db.yml" not in step_inputs(project, project.machines)["db"]["db"]


@pytest.mark.parametrize("pattern", [".", "./", "**/x/**", "../elsewhere/*", "/etc/*"])
def test_watch_patterns_stay_in_the_project_and_bounded(tmp_path: Path, pattern: str) -> None:
    from tapers.errors import TaperfileError

    (tmp_path / "Taperfile.yaml").write_text(
        f"version: 1\nmachines:\n  web:\n    provision:\n      - {{shell: 'true', watch: ['{pattern}']}}\n")
    with pytest.raises(TaperfileError, match="watch"):
        open_project(explicit=tmp_path / "Taperfile.yaml")

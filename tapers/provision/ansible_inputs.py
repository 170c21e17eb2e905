"""What an `ansible:` step reads, found the way ansible-playbook finds it, without running it.

- the playbook, and the playbooks it imports;
- in each play: `vars_files`, its roles and their dependencies (`meta/main.yml`), the task
  files it includes or imports, `include_vars` files, and the roles tasks include;
- roles resolved as ansible-playbook resolves them: `roles/` beside the playbook, then the
  roles path (ANSIBLE_ROLES_PATH, else the ansible.cfg's `roles_path`, relative to that file,
  else Ansible's defaults), then the playbook's own folder; a role counts whole (its tasks,
  defaults, vars, templates, files, meta);
- collections installed where the play finds them (`collections/` beside the playbook, the
  collections path): one in the project (or unbuilt) by its files, one elsewhere by its
  MANIFEST.json (its version and every file's checksum); what `requirements:` installs
  is not an input (its requirements.yml and local archives are);
- `group_vars/`, `host_vars/` and the conventional folders beside each playbook (templates,
  files, every plugin folder Ansible loads from there), and the ansible.cfg in effect.

A sibling playbook or the Taperfile is not an input unless something above names it. What
can't be told without running the play (a name made with `{{ }}`, a role that isn't
found) is listed as an unresolved input, which `plan` reports. Files in folders no machine
may see are not read (see host_folders), and the YAML read is bounded like a Taperfile's.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tapers.errors import TapersError
from tapers.provision.api import UNRESOLVED, Inputs, read_step_file, short, shown_path, tree_inputs

# Beside each playbook: its variables, its conventional folders, and every plugin folder
# ansible-playbook loads from beside a playbook on its own (one per plugin loader).
BESIDE_PLAYBOOK = ("group_vars", "host_vars", "templates", "files", "library", "module_utils", "action_plugins",
                   "become_plugins", "cache_plugins", "callback_plugins", "cliconf_plugins", "connection_plugins",
                   "doc_fragments", "filter_plugins", "httpapi_plugins", "inventory_plugins", "lookup_plugins",
                   "netconf_plugins", "shell_plugins", "strategy_plugins", "terminal_plugins", "test_plugins",
                   "vars_plugins")
DEFAULT_ROLES = ("~/.ansible/roles", "/usr/share/ansible/roles", "/etc/ansible/roles")
DEFAULT_COLLECTIONS = ("~/.ansible/collections", "/usr/share/ansible/collections")
INSTALLED = Path(".tapers") / "ansible"  # where `requirements:` installs (relative to the project)
MAX_YAML = 2000  # YAML files read for one step (the bound on what a project can make tapers parse)
MAX_YAML_BYTES = 1024**2  # one file
MAX_YAML_TOTAL = 16 * 1024**2  # all of a step's (parsing is the slow part)
MAX_DEPTH = 50  # task files including task files
MAX_SMALL_FILE = 1024**2  # an ansible.cfg, a collection's MANIFEST.json

_BUILTIN = ("ansible.builtin.", "ansible.legacy.")
_TASK_FILES = {"include_tasks", "import_tasks", "include"}
_ROLES = {"include_role", "import_role"}


def config_file(root: Path, options: dict[str, Any]) -> Path | None:
    """The ansible.cfg ansible-playbook uses when run in the project folder: the step's
    `config_file`, else ANSIBLE_CONFIG, ./ansible.cfg, ~/.ansible.cfg, /etc/ansible/ansible.cfg."""
    if options.get("config_file"):
        return (root / options["config_file"]).resolve()
    candidates = [expand(os.environ["ANSIBLE_CONFIG"], root)] if os.environ.get("ANSIBLE_CONFIG") else []
    candidates += [root / "ansible.cfg", expand("~/.ansible.cfg", root), Path("/etc/ansible/ansible.cfg")]
    for path in candidates:
        path = path / "ansible.cfg" if path.is_dir() else path
        if path.is_file():
            return path
    return None


def search_path(config: Path | None, keys: tuple[str, ...], env: tuple[str, ...], default: tuple[str, ...],
                cwd: Path) -> list[Path]:
    """A path list setting: from the environment (relative to the play's folder, `cwd`), else
    the ansible.cfg (relative to it), else the default."""
    for name in env:
        if os.environ.get(name):
            return _split(os.environ[name], cwd)
    if config is not None:
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            parser.read_string(small_file(config).decode("utf-8"))
        except (configparser.Error, OSError, UnicodeDecodeError, TapersError):
            parser = configparser.ConfigParser()
        for key in keys:
            if parser.has_option("defaults", key):
                return _split(parser.get("defaults", key), config.parent)
    return _split(os.pathsep.join(default), cwd)


# ansible.cfg settings that name what ansible-playbook loads and runs on the host (plugins,
# modules, the vault password program, ssh): (section, key).
HOST_CODE_SETTINGS = tuple(("defaults", key) for key in (
    "action_plugins", "become_plugins", "cache_plugins", "callback_plugins", "cliconf_plugins", "connection_plugins",
    "doc_fragment_plugins", "filter_plugins", "httpapi_plugins", "inventory_plugins", "library", "lookup_plugins",
    "module_utils", "netconf_plugins", "strategy_plugins", "terminal_plugins", "test_plugins", "vars_plugins",
    "vault_password_file", "roles_path", "collections_path", "collections_paths",
)) + (("ssh_connection", "ssh_executable"),)


def host_code_paths(config: Path | None) -> list[Path]:
    """The paths the ansible.cfg's HOST_CODE_SETTINGS name (relative to it)."""
    if config is None:
        return []
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(small_file(config).decode("utf-8"))
    except (configparser.Error, OSError, UnicodeDecodeError, TapersError):
        return []
    return [path for section, key in HOST_CODE_SETTINGS if parser.has_option(section, key)
            for path in _split(parser.get(section, key), config.parent)]


def roles_path(config: Path | None, cwd: Path) -> list[Path]:
    return search_path(config, ("roles_path",), ("ANSIBLE_ROLES_PATH",), DEFAULT_ROLES, cwd)


def collections_path(config: Path | None, cwd: Path) -> list[Path]:
    return search_path(config, ("collections_path", "collections_paths"),
                       ("ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_COLLECTIONS_PATHS"), DEFAULT_COLLECTIONS, cwd)


def small_file(path: Path) -> bytes:
    """A regular file of at most MAX_SMALL_FILE, read without following links (a project's
    file; tapers may be root) and refused in folders no machine may see."""
    from tapers.host_folders import refusal

    if refusal(path.resolve()) is not None:
        raise OSError(f"{path}: in a folder no machine may see")
    return read_step_file(path, "a file of the play", MAX_SMALL_FILE)


def _split(value: str, base: Path) -> list[Path]:
    """The real paths of a path list (see real_path)."""
    return [path for part in value.split(os.pathsep) if part.strip() and (path := real_path(part, base)) is not None]


def real_path(written: str, base: Path) -> Path | None:
    """A path as ansible-playbook reads it (see expand), links resolved; None when no path
    can be made of it (`~nobody`, a NUL, a loop of links): ansible-playbook finds nothing
    there either."""
    try:
        return expand(written, base).resolve()
    except (RuntimeError, ValueError, OSError):
        return None


def expand(written: str, base: Path) -> Path:
    """A path as ansible-playbook reads it: `~` is the home of whoever it runs as (under
    sudo, the user who ran sudo, not root), a relative path is relative to `base`."""
    if written == "~" or written.startswith("~/"):
        from tapers import project_files

        _, env = project_files.as_invoker(dict(os.environ))
        written = (env.get("HOME") or os.path.expanduser("~")) + written[1:]
    return base / Path(written).expanduser()


def _templated(value: object) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _short_key(key: str) -> str:
    for prefix in _BUILTIN:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


class _Reader:
    def __init__(self, root: Path, playbook: Path, config: Path | None, found: Inputs, installs: bool) -> None:
        self.root, self.base, self.found = root, playbook.parent, found
        self.installed = (root / INSTALLED).resolve()  # made from `requirements:` (the inputs), not inputs
        self.installs = installs
        self.role_folders = [self.base / "roles", self.installed / "roles", *roles_path(config, root), self.base]
        self.read: set[Path] = set()
        self.beside: set[Path] = set()  # playbook folders whose BESIDE_PLAYBOOK folders are counted
        self.roles: set[Path] = set()
        self.bytes = 0
        self.depth = 0

    def unresolved(self, what: str, where: Path) -> None:
        self.found[f"{UNRESOLVED} {what} (in {shown_path(self.root, where)})"] = ""

    def add(self, path: Path) -> bool:
        """The file or folder as inputs, when it exists and may be read."""
        from tapers.host_folders import refusal

        path = path.resolve()
        if not path.exists():
            return False
        if refusal(path) is not None:
            self.found[f"{UNRESOLVED} {shown_path(self.root, path)} (not read: a folder no machine may see)"] = ""
            return False
        links: list[str] = []
        self.found.update(tree_inputs(self.root, path, links))
        for link in links:  # not followed, nor in the play's copy: said, so a file the play misses is no mystery
            self.found[f"{UNRESOLVED} {link} is a link: not followed (not in the play's copy)"] = ""
        return True

    def load(self, path: Path, where: Path) -> Any:
        """A YAML file's data (None when read already, missing or unreadable: then said)."""
        from tapers.taperfile.yaml_source import load_data

        path = path.resolve()
        if path in self.read:
            return None
        if len(self.read) >= MAX_YAML or self.bytes > MAX_YAML_TOTAL:
            self.unresolved(f"more than {MAX_YAML} YAML files or {MAX_YAML_TOTAL // 1024**2} MiB: the rest not read",
                            where)
            return None
        self.read.add(path)
        if not self.add(path):
            if not path.exists():
                self.unresolved(f"{shown_path(self.root, path)} not found", where)
            return None
        try:
            data = read_step_file(path, "a file of the play", MAX_YAML_BYTES)
            self.bytes += len(data)
            return load_data(data.decode("utf-8"))
        except (ValueError, OSError, TapersError) as exc:  # too big, a link, not YAML
            self.unresolved(f"{shown_path(self.root, path)} can't be read ({exc})", where)
            return None

    def playbook(self, path: Path, where: Path) -> None:
        if path.parent.resolve() not in self.beside:
            self.beside.add(path.parent.resolve())
            for name in BESIDE_PLAYBOOK:
                self.add(path.parent / name)
        plays = self.load(path, where)
        if not isinstance(plays, list):
            return
        for play in plays:
            if not isinstance(play, dict):
                continue
            for key, value in play.items():
                if _short_key(key) == "import_playbook":
                    self.file(value, path.parent, path, self.imported_playbook)
            files = play.get("vars_files") or []
            for entry in files if isinstance(files, list) else [files]:
                for alternative in entry if isinstance(entry, list) else [entry]:
                    self.file(alternative, path.parent, path, lambda p, w: self.add(p))
            for entry in play.get("roles") or []:
                self.role(entry.get("role") or entry.get("name") if isinstance(entry, dict) else entry, path)
            for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
                self.tasks(play.get(section), path.parent, path)

    def imported_playbook(self, path: Path, where: Path) -> None:
        with self.deeper(where) as allowed:
            if allowed:
                self.playbook(path, where)

    def file(self, written: object, base: Path, where: Path, then: Any) -> None:
        if isinstance(written, dict):
            written = written.get("file") or written.get("_raw_params")
        if not isinstance(written, str) or not written.strip():
            return
        if _templated(written):
            self.unresolved(f"`{written.strip()}`", where)
            return
        then(base / written.strip(), where)

    def tasks(self, items: object, base: Path, where: Path) -> None:
        for task in items if isinstance(items, list) else []:
            if not isinstance(task, dict):
                continue
            for section in ("block", "rescue", "always"):
                self.tasks(task.get(section), base, where)
            for key, value in task.items():
                key = _short_key(key)
                if key in _TASK_FILES:
                    self.file(value, base, where, self.task_file)
                elif key in _ROLES:
                    self.role(value.get("name") if isinstance(value, dict) else value, where)
                elif key == "include_vars":
                    self.file(value, base, where, self.vars_file)

    def task_file(self, path: Path, where: Path) -> None:
        with self.deeper(where) as allowed:
            if allowed:
                self.tasks(self.load(path, where), path.parent, path)

    @contextmanager
    def deeper(self, where: Path) -> Iterator[bool]:
        """One level more of playbooks, task files or roles pulling in others (bounded)."""
        if self.depth >= MAX_DEPTH:
            self.unresolved(f"playbooks, task files or roles nested more than {MAX_DEPTH} deep", where)
            yield False
            return
        self.depth += 1
        try:
            yield True
        finally:
            self.depth -= 1

    def vars_file(self, path: Path, where: Path) -> None:
        """include_vars: beside the including file, in a `vars/` folder beside it or above it."""
        for candidate in (path, path.parent / "vars" / path.name, path.parent.parent / "vars" / path.name):
            if self.add(candidate):
                return
        self.unresolved(f"{shown_path(self.root, path)} not found", where)

    def role(self, name: object, where: Path) -> None:
        if not isinstance(name, str) or not name.strip():
            return
        name = name.strip()
        if _templated(name):
            self.unresolved(f"role `{name}`", where)
            return
        if name.count(".") >= 2 and "/" not in name:
            return  # a collection's role: counted with the collection
        folder = next((f / name for f in self.role_folders if (f / name).is_dir()), None)
        if folder is None:
            if not self.installs:  # else `requirements:` will install it
                self.unresolved(f"role `{name}` not found", where)
            return
        if folder.resolve() in self.roles or folder.resolve().is_relative_to(self.installed):
            return
        self.roles.add(folder.resolve())
        with self.deeper(where) as allowed:
            if allowed:
                self.role_files(folder, where)

    def role_files(self, folder: Path, where: Path) -> None:
        self.add(folder)
        for meta in (folder / "meta" / "main.yml", folder / "meta" / "main.yaml"):
            data = self.load(meta, where) if meta.exists() else None
            dependencies = data.get("dependencies") if isinstance(data, dict) else None
            for dependency in dependencies if isinstance(dependencies, list) else []:
                if isinstance(dependency, dict):
                    dependency = dependency.get("role") or dependency.get("name")
                self.role(dependency, meta)
        for main in ("main.yml", "main.yaml"):
            if (folder / "tasks" / main).exists():
                self.tasks(self.load(folder / "tasks" / main, where), folder / "tasks", folder / "tasks" / main)

    def requirements(self, path: Path) -> None:
        """The requirements file, and the local archives and folders it installs from."""
        data = self.load(path, path)
        if isinstance(data, dict):
            data = [entry for key in ("roles", "collections") if isinstance(data.get(key), list) for entry in data[key]]
        for entry in data if isinstance(data, list) else []:
            source = (entry.get("src") or entry.get("source") or entry.get("name")) if isinstance(entry, dict) else entry
            if isinstance(source, str) and source.startswith(("./", "../", "/", "file://")):
                self.add(path.parent / source.removeprefix("file://"))

    def collections(self, config: Path | None) -> None:
        paths = collections_path(config, self.root)
        for path in [self.base / "collections", *paths]:
            tree = path if path.name == "ansible_collections" else path / "ansible_collections"
            if not tree.is_dir():
                continue
            for collection in sorted(p for p in tree.glob("*/*") if p.is_dir()):
                manifest = collection / "MANIFEST.json"
                # One in the project is counted file by file: a machine can write it, and the
                # play runs with the very files counted (play_copy).
                if manifest.is_file() and not collection.resolve().is_relative_to(self.root.resolve()):
                    name = f"collection {collection.parent.name}.{collection.name} ({shown_path(self.root, collection)})"
                    try:
                        self.found[name] = short(small_file(manifest).decode(errors="surrogateescape"))
                    except (OSError, TapersError) as exc:
                        self.unresolved(f"{shown_path(self.root, manifest)} can't be read ({exc})", manifest)
                else:
                    self.add(collection)


def inputs(root: Path, playbook: Path, options: dict[str, Any]) -> Inputs:
    found: Inputs = {}
    config = config_file(root, options)
    if config is not None and config.is_file():
        try:
            found[shown_path(root, config)] = short(small_file(config).decode(errors="surrogateescape"))
        except (OSError, TapersError) as exc:
            found[f"{UNRESOLVED} {shown_path(root, config)} can't be read ({exc})"] = ""
    reader = _Reader(root, playbook, config, found, installs=bool(options.get("requirements")))
    reader.playbook(playbook, playbook)
    if options.get("requirements"):
        reader.requirements(root / options["requirements"])
    reader.collections(config)
    return found

"""A JSON Schema of the Taperfile, generated from the model, for editors (`tapers schema`).

The model says which keys exist and what they accept; this adds what an editor shows
(each key's description; a test checks every key has one) and what the model reads
before validating: sizes written as text (`512M`), a shell step written as a string,
`x-` keys anywhere, and `${VARIABLE}` references where a number or a boolean goes.
"""

from __future__ import annotations

from typing import Any

DESCRIPTIONS = {
    "Taperfile.version": "The Taperfile format: 1.",
    "Taperfile.name": "The project's name (a-z, 0-9, '-'; at most 30). Containers are tapers-<name>-<machine>. "
                      "Default: the folder's name and a short hash of its path.",
    "Taperfile.defaults": "Machine keys every machine gets unless it sets them itself.",
    "Taperfile.machines": "The machines, by name (a letter, then a-z, 0-9 and '-').",
    "MachineSettings.box": "The box machines are cloned from: NAME or NAME@VERSION. Default: debian/bookworm.",
    "MachineSettings.box_url": "Where to get the box when it is not cached: a box archive or a catalog (https or a path).",
    "MachineSettings.hostname": "The machine's hostname. Default: the machine's name.",
    "MachineSettings.cpus": "CPU limit, may be fractional (0.5 = half a core). Default: none.",
    "MachineSettings.memory": "Memory limit: K, M, G (also Ki, Mi, Gi); at least 32M. Default: none.",
    "MachineSettings.pids": "Most processes the machine may run. Default: none.",
    "MachineSettings.primary": "`tapers ssh` with no name opens this machine (at most one).",
    "MachineSettings.autostart": "false: `tapers up` starts it only when named. Default: true.",
    "MachineSettings.provision": "Steps run in order on the first `up`; later only what changed.",
    "MachineSettings.depends_on": "Machines that are up and provisioned before this one's steps start.",
    "MachineSettings.networks": "Private networks and forwarded ports (every machine also has a NAT address).",
    "MachineSettings.synced_folders": "Host folders mounted in the machine (the project is at /tapers unless disabled).",
    "MachineSettings.placement": "On an LXD cluster: the member to run on.",
    "MachineSettings.privileged": "true: root in the machine is root on the host. Default false: an unprivileged "
                                  "host uid. Changing it re-creates the machine.",
    "MachineSettings.nesting": "true: containers (Docker, LXC) can run inside the machine. Default: false.",
    "MachineSettings.triggers": "Commands run before or after tapers acts on the machine (up, halt, reload, "
                                "destroy, provision), on the host or in the machine.",
    "MachineSettings.lxc": "Raw liblxc keys, applied after tapers' own (a restart): lxc.environment, lxc.sysctl.*, "
                           "lxc.prlimit.*, lxc.cgroup2.*... Keys that act on the host or on what tapers manages "
                           "(hooks, mounts, network, rootfs, idmap, confinement) are refused.",
    "MachineSettings.lxd": "Raw LXD instance settings, applied after tapers' own (a restart).",
    "LxdRaw.config": "Instance config keys: limits.*, linux.sysctl.*, environment.*, boot.*, snapshots.*, user.*, "
                     "cloud-init.* (raw.*, security.*, linux.kernel_modules, snapshots.schedule are refused).",
    "LxdRaw.devices": "Devices by name: only unix-char devices of /dev/fuse, /dev/net/tun, /dev/kvm.",
    "TriggerSettings.name": "The trigger's name (in messages).",
    "TriggerSettings.before": "Run before this command acts on the machine: up, halt, reload, destroy or "
                              "provision (or a list of them).",
    "TriggerSettings.after": "Run after this command acted on the machine (one of them, or a list).",
    "TriggerSettings.run": "A script run on the host, in the project folder, as you, once you approved it "
                           "(`tapers trust`): a string (inline), or {inline|path, args, env}.",
    "TriggerSettings.run_remote": "A script run in the machine over SSH, as a shell step: a string (inline), or "
                                  "{inline|path, args, env, privileged}.",
    "TriggerSettings.on_error": "halt (default): a failing trigger stops the command for this machine; "
                                "continue: it is said, and the command goes on.",
    "Placement.member": "The cluster member's name.",
    "ProvisionStep.name": "The step's name (for `tapers provision --with NAME` and in messages).",
    "ProvisionStep.run": "once (default): again only when its inputs changed; always: every `up`; never: only when named.",
    "ProvisionStep.reboot": "Reboot the machine after this step (and wait for it).",
    "ProvisionStep.watch": "Globs of more project files whose change runs the step again.",
    "ProvisionStep.cache": "false: a new machine never starts from the provisioning cache at or after this step (its result depends on something the cache can't see).",
    "ProvisionStep.shell": "A script run in the machine: a string (inline), or {inline|path, args, env, privileged}.",
    "ProvisionStep.file": "A file or folder copied into the machine.",
    "ProvisionStep.ansible": "ansible-playbook on the host against the machine.",
    "ShellStep.inline": "The script's text (left as written: its $ are the machine shell's).",
    "ShellStep.path": "The script's file, relative to the Taperfile's folder.",
    "ShellStep.args": "Arguments, passed verbatim.",
    "ShellStep.env": "Environment variables for the script.",
    "Script.inline": "The script's text, run by /bin/sh (left as written: its $ are the shell's).",
    "Script.path": "The script's file, relative to the Taperfile's folder (run by its #! line, else /bin/sh).",
    "Script.args": "Arguments, passed verbatim.",
    "Script.env": "Environment variables for the script (besides TAPERS_MACHINE and TAPERS_TRIGGER).",
    "ShellStep.privileged": "true (default): as root through sudo; false: as the login user.",
    "FileStep.source": "The file or folder on the host, relative to the Taperfile's folder.",
    "FileStep.destination": "Where in the machine (an absolute path).",
    "AnsibleStep.playbook": "The playbook, relative to the Taperfile's folder.",
    "AnsibleStep.extra_vars": "Variables for the play (--extra-vars).",
    "AnsibleStep.groups": "Inventory groups: name -> machines (every machine is also in `all`).",
    "AnsibleStep.limit": "Narrow further (the step always targets this machine).",
    "AnsibleStep.tags": "Only tasks with these tags.",
    "AnsibleStep.skip_tags": "Skip tasks with these tags.",
    "AnsibleStep.become": "--become for the whole play.",
    "AnsibleStep.config_file": "The ansible.cfg to use. Default: ./ansible.cfg (the play runs in the project folder).",
    "AnsibleStep.vault_password_file": "--vault-password-file.",
    "AnsibleStep.verbose": "true or 1-4: -v to -vvvv.",
    "AnsibleStep.raw_arguments": "More ansible-playbook arguments, as given.",
    "AnsibleStep.requirements": "A requirements.yml: its roles and collections are installed into "
                                ".tapers/ansible/ before the play.",
    "NetworkEntry.private": "A host-only network address: {ip: 192.168.x.y}.",
    "NetworkEntry.forwarded_port": "A host port reaching a port of the machine.",
    "PrivateNetwork.ip": "The machine's address; the host is .1 of the same /24.",
    "ForwardedPort.guest": "The port in the machine.",
    "ForwardedPort.host": "The port on the host.",
    "ForwardedPort.host_ip": "The host address it listens on (0.0.0.0: every one). Default: 127.0.0.1.",
    "ForwardedPort.protocol": "tcp (default) or udp.",
    "ForwardedPort.auto_correct": "true: use a free host port when this one is taken (`tapers port` shows it).",
    "SyncedFolder.host": "The host folder, relative to the Taperfile's folder (or absolute).",
    "SyncedFolder.guest": "Where in the machine (an absolute path).",
    "SyncedFolder.readonly": "true: the machine can't write it.",
    "SyncedFolder.disabled": "true: not mounted (`{host: ., guest: /tapers, disabled: true}`: no /tapers).",
    "SyncedFolder.create": "false: a missing host folder is an error instead of being created.",
}

_VARIABLE = {"type": "string", "pattern": r"\$"}  # a ${VARIABLE} where a number or boolean goes
_SIZE = {"type": "string", "pattern": r"^ *[0-9]+(\.[0-9]+)? *[KMGTkmgt]([iI]?[bB]?)? *$|\$"}  # as units.py reads
_EXTENSIONS = {"^x-": {}}


def taperfile_schema() -> dict[str, Any]:
    from tapers.taperfile.model import Taperfile

    schema = Taperfile.model_json_schema()
    definitions = schema.setdefault("$defs", {})
    for name, model in [("Taperfile", schema), *definitions.items()]:
        for key, prop in model.get("properties", {}).items():
            prop.pop("title", None)
            description = DESCRIPTIONS.get(f"{name}.{key}")
            if description:
                prop["description"] = description
            _allow_variables(prop)
        model.pop("title", None)
        if model.get("additionalProperties") is False:
            model["patternProperties"] = _EXTENSIONS
    settings = definitions["MachineSettings"]["properties"]
    settings["memory"]["anyOf"] = [{"type": "integer"}, _SIZE, {"type": "null"}]
    for model, key in (("ProvisionStep", "shell"), ("TriggerSettings", "run"), ("TriggerSettings", "run_remote")):
        script = definitions[model]["properties"][key]  # a string is an inline script
        script["anyOf"] = [{"type": "string"}, *script["anyOf"]]
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Taperfile"
    return schema


def _allow_variables(prop: dict[str, Any]) -> None:
    """A number or a boolean may also be written as a `${VARIABLE}`."""
    choices = prop.get("anyOf", [prop])
    if any(choice.get("type") in ("integer", "number", "boolean") for choice in choices):
        if "anyOf" in prop:
            prop["anyOf"].append(_VARIABLE)
        else:
            typed = {k: prop.pop(k) for k in list(prop) if k not in ("description", "default")}
            prop["anyOf"] = [typed, _VARIABLE]

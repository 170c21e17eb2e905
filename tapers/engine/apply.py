"""Carry out a Plan. No decisions here: each action does what it says and records it.

Machines are worked on in parallel (one thread each); box builds come first. A
machine's provisioning steps wait until the machines it depends on are done.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tapers import paths
from tapers.engine import limits
from tapers.backend.api import Backend, ContainerInfo, MachineSpec, NetworkConfig, State
from tapers.errors import BoxError, CacheError, HostError, Interrupted, MachineFailures, ProvisionError, StateError, TapersError
from tapers.events import Reporter
from tapers.engine.plan import STARTS, Action, Kind, Plan
from tapers.profile import phase
from tapers.record import DESTROYING, READY, PortRecord, Record
from tapers.engine.settings import RESTART_KEYS, desired_settings, privileged_was
from tapers.project import CONTAINER_PREFIX, Project
from tapers.taperfile import Machine
from tapers.taperfile.machine import Step, split_box_ref

if TYPE_CHECKING:
    from tapers.engine.caching import Caching, Start
    from tapers.engine.observe import Observed
    from tapers.ssh.config import SshTarget
    from tapers.provision.runner import SshGuest


class Context:
    """What every action of one apply shares: the project, the backend, the reporter, the
    options of the command, and the threads' common state. (A plain class: the dataclasses
    module costs every halt and destroy 10 ms to import.)"""

    def __init__(
        self,
        project: Project,
        backend: Backend,
        reporter: Reporter,
        project_key: str = "",
        halt_timeout: float = 30.0,
        ssh_timeout: float = 60.0,
        ssh_check: Callable[[SshTarget, Path, float], None] | None = None,
        guest_factory: Callable[[str, Context], Any] | None = None,
        caching: Caching | None = None,
    ) -> None:
        self.project = project
        self.backend = backend
        self.reporter = reporter
        self.project_key = project_key
        self.halt_timeout = halt_timeout
        self.ssh_timeout = ssh_timeout
        self.ssh_check = ssh_check
        self.guest_factory = guest_factory
        self.caching = caching  # new machines' provisioning cache (None: not used)
        self._finished: dict[str, threading.Event] = {}
        self._failed: set[str] = set()
        self._access_guard = threading.Lock()
        self._cancelled = threading.Event()
        self._ports_guard = threading.Lock()
        self._guests: dict[str, Any] = {}
        self._authorized: set[str] = set()  # machines whose project key was authorized again
        self._addresses: dict[str, NetworkConfig] = {}  # new machines' NAT addresses, chosen before any is made
        self._before: Observed | None = None  # the project's machines when those addresses were chosen

    def cancel(self) -> None:
        """Ctrl-C: machines stop before their next action; running steps lose their connection."""
        self._cancelled.set()
        for guest in list(self._guests.values()):
            guest.close()

    def refresh_access(self) -> None:
        """Rewrite .tapers/ssh_config, known_hosts and inventory from the machines as they are."""
        from tapers.engine.access import write_ssh_files
        from tapers.engine.observe import observe

        with self._access_guard:
            write_ssh_files(self.project, observe(self.project, self.backend))


def apply(plan: Plan, ctx: Context) -> None:
    """Project-wide actions before the machines (boxes, then networks, then the new machines'
    addresses) and after them (names, then releasing the networks); each machine's actions
    in its own thread."""
    if any(action.kind is Kind.PROVISION for action in plan.actions):
        _load_ssh_meanwhile()
    for action in plan.actions:
        if action.kind in (Kind.BUILD_BOX, Kind.PREPARE_NETWORK):
            ctx.reporter.line(action.subject, action.what)
            with phase(action.what, action.subject):
                if action.kind is Kind.BUILD_BOX:
                    _get_box(action.subject, ctx)
                else:
                    _prepare_networks(plan, ctx)
    if any(action.kind in (Kind.CREATE, Kind.RECREATE, Kind.FORWARD_PORTS) for action in plan.actions):
        _close_stray_ports(ctx, making=any(action.kind in (Kind.CREATE, Kind.RECREATE) for action in plan.actions))
    _choose_addresses(plan, ctx)
    try:
        _run_machines(plan, ctx)
    except BaseException:
        if ctx._addresses and all(done.is_set() for done in ctx._finished.values()):
            _names_after_a_failure(ctx)  # (not while a machine's thread still works: a second Ctrl-C)
        raise
    for action in plan.actions:
        if action.kind is Kind.SYNC_NAMES:
            with phase(action.what, action.subject):
                updated = sync_names(ctx)
            if updated:  # (new machines start with every name: often nothing is out of date)
                ctx.reporter.line(action.subject, f"updated /etc/hosts in {', '.join(updated)}")
        elif action.kind is Kind.RELEASE_NETWORK:
            ctx.reporter.line(action.subject, action.what)
            with phase(action.what, action.subject):
                ctx.backend.network.release_unused_private()


def _names_after_a_failure(ctx: Context) -> None:
    """Machines made in a run that failed booted naming the others at the addresses chosen
    for them: one whose machine wasn't made must not stay there (another machine may get
    it). Best done, as far as it goes: the run's own error is what is reported."""
    try:
        sync_names(ctx)
    except BaseException:  # (a Ctrl-C meanwhile included) the run's own error is the one raised
        pass


def _load_ssh_meanwhile() -> None:
    """Steps will run over SSH: the SSH library (a tenth of a second or more to import) loads
    while the machines boot, not after."""
    def load() -> None:
        with phase("load the SSH library (while machines boot)"):
            import paramiko  # noqa: F401

    threading.Thread(target=load, daemon=True, name="load-ssh").start()


def _prepare_networks(plan: Plan, ctx: Context) -> None:
    """The NAT network, and each host-only network a machine that boots in this plan is on
    (once, however many machines share it). Done before the machines' threads start."""
    network = ctx.backend.network
    network.prepare()
    private: dict[str, NetworkConfig] = {}
    for name in plan.subjects():
        if any(a.kind in STARTS for a in plan.for_subject(name)):
            machine = ctx.project.loaded.machine(name)
            network.check_forwards([(p.host_ip, p.host, p.protocol, p.guest, p.auto_correct) for p in machine.ports])
            for address in machine.private_ips:
                config = network.private(address)
                private.setdefault(config.bridge, config)
    for config in private.values():
        network.ensure_private(config)


def _close_stray_ports(ctx: Context, making: bool) -> None:
    """Host ports that lead to no machine are closed before a new machine gets an address
    (it may be theirs) and before ports are chosen (they hold some): forwards of containers
    gone without tapers (deleted by hand) or whose record lists no ports (a tapers killed
    between making them and saving the record). A machine's record lists its ports before
    they are forwarded and until they are taken away, so none of a live machine's is closed.

    One that can't be closed stops the run only when it is `making` machines (one of them
    could get its address, and those host ports would lead into it); otherwise it is said
    and the next run tries again."""
    from tapers import locks

    network = ctx.backend.network
    if not network.forwards_outlive_containers:
        return
    # Under the host's network lock, which every forwarding takes too: another project's
    # `up` can't make a machine's rules between this reading them and closing them.
    with locks.held(paths.network_lock()):
        forwarded = network.forwarded()  # (first: forwards made after this are listed in their records)
        if not forwarded:
            return
        # A record that can't be read (or was written by a newer tapers) keeps its ports.
        kept = {info.name for info in ctx.backend.list(prefix=CONTAINER_PREFIX)
                if info.record is None or info.record.ports}
        stuck: list[str] = []
        for container in sorted(forwarded - kept):
            try:
                network.unforward(container)
            except (TapersError, OSError) as error:
                stuck.append(f"`{container}`: {error}")
                continue
            ctx.reporter.line("ports", f"closed the host ports of `{container}`, which no machine forwards now")
    if stuck and making:
        raise HostError(f"could not close the host ports that lead to no machine now ({'; '.join(stuck)}): "
                        "a new machine could get their address, so none is made",
                        hint="mend what the error names, then run the command again (no machine was made)")
    for text in stuck:
        ctx.reporter.line("ports", f"warning: could not close the host ports that lead to no machine now, of {text}")


def _choose_addresses(plan: Plan, ctx: Context) -> None:
    """The NAT addresses of the machines the plan makes, chosen before any is made, so that
    each one's /etc/hosts names all the others from its first boot: no update after they
    boot, which a single machine doesn't need either. An address is claimed only when its
    machine is made (`_make`): one another tapers takes meanwhile is chosen again there,
    and `sync_names` puts the hosts files right afterwards."""
    made = list(dict.fromkeys(a.subject for a in plan.actions if a.kind in (Kind.CREATE, Kind.RECREATE)))
    if not made:
        return
    from tapers.engine.observe import observe

    containers = {ctx.project.container(name): name for name in made}
    listed = ctx.backend.list(prefix=CONTAINER_PREFIX)
    ctx._before = observe(ctx.project, ctx.backend, listed)
    # A machine made again may keep its address: it is given back when its container goes.
    used = {info.address for info in listed if info.address and info.name not in containers}
    for container, name in containers.items():
        try:
            net = ctx.backend.network.allocate(container, used)
        except HostError:  # no address left: that machine's creation says so, the others are made
            continue
        used.add(net.address)
        ctx._addresses[name] = net


def _peers(ctx: Context) -> list[tuple[str, list[str]]]:
    """The /etc/hosts rows a new machine starts with: the project's machines, those being
    made at the addresses chosen for them."""
    if ctx._before is None:
        return []
    from tapers.engine import names

    return names.table(ctx.project, ctx._before, {name: net.address for name, net in ctx._addresses.items()})


def _get_box(box: str, ctx: Context) -> None:
    """A missing box: from the `box_url` a machine gives for it, else built from its recipe."""
    url = next((m.box_url for m in ctx.project.machines if m.box == box and m.box_url), None)
    name, version = split_box_ref(box)
    source = None
    if url is not None:
        local = (ctx.project.root / url).resolve()
        if local.exists():
            from tapers.host_folders import refusal

            why = refusal(local)
            if why is not None:
                raise BoxError(f"box_url `{url}` can't be read for a box: {why}", hint="keep box archives in the project")
        source = str(local) if local.is_file() else url
    if paths.as_user():
        _get_box_as_user(box, source, ctx)
    elif source is None:
        from tapers.boxes.build import ensure_box
        from tapers.boxes.recipe import load_recipe

        ensure_box(load_recipe(box), ctx.reporter)
    else:
        from tapers.boxes.importer import add_box

        add_box(name, source, ctx.reporter, version=version or None)


def _get_box_as_user(box: str, source: str | None, ctx: Context) -> None:
    """A normal user's boxes are made as root of their id map (their files are the machines'
    ids): by `tapers box build|add` run there, as the user would type it."""
    from tapers.backend.liblxc import userns

    name, version = split_box_ref(box)
    args = ["box", "build", name] if source is None else \
        ["box", "add", name, source, *(["--version", version] if version else [])]
    ctx.reporter.line("box", f"`{box}` is not in your cache: tapers {' '.join(args)}")
    if userns.tapers_in_map(args) != 0:
        raise BoxError(f"could not get box `{box}` (see above)", hint=f"try `tapers {' '.join(args)}` yourself")


def _run_machines(plan: Plan, ctx: Context) -> None:
    subjects = plan.subjects()
    ctx._finished.update({subject: threading.Event() for subject in subjects})
    if len(subjects) > 1 and any(a.kind is Kind.PROVISION and _step(ctx, a).kind == "ansible" for a in plan.actions):
        _make_host_folders_first(plan, ctx)
    if len(subjects) <= 1:
        for subject in subjects:
            _run_machine(subject, plan.for_subject(subject), ctx)
        return
    from concurrent.futures import ThreadPoolExecutor

    failures: dict[str, TapersError] = {}
    with ThreadPoolExecutor(max_workers=min(8, len(subjects)), thread_name_prefix="tapers") as pool:
        futures = {s: pool.submit(_run_machine, s, plan.for_subject(s), ctx) for s in subjects}
        try:
            for subject, future in futures.items():
                error = future.exception()
                if isinstance(error, TapersError):
                    failures[subject] = error
                elif error is not None:
                    raise error
        except KeyboardInterrupt:
            ctx.cancel()
            raise
    if len(failures) == 1:
        raise next(iter(failures.values()))
    if failures:
        lines = "\n".join(f"  {name}: {error.message}" for name, error in failures.items())
        raise MachineFailures(f"{len(failures)} of {len(subjects)} machines failed:\n{lines}")


def _step(ctx: Context, action: Action) -> Step:
    """The Taperfile's step a PROVISION action runs."""
    return ctx.project.loaded.machine(action.subject).provision[action.step - 1]


def _make_host_folders_first(plan: Plan, ctx: Context) -> None:
    """The synced folders the machines this run starts will have, made before any of them
    runs: a play keeps out of those machines can write (see play_ns), and one made while a
    play runs, for a machine started beside it, would not be covered. (A folder that can't
    be made is left for that machine to report, as it would have.)"""
    from tapers.engine import machine_setup as setup

    for name in dict.fromkeys(a.subject for a in plan.actions if a.kind in STARTS):
        try:
            setup.host_folders(ctx.project, ctx.project.loaded.machine(name), ctx.reporter)
        except (TapersError, OSError):
            pass


def _run_machine(name: str, actions: list[Action], ctx: Context) -> None:
    started = time.monotonic()
    guest = None
    provisioning = False
    try:
        for action in actions:
            if ctx._cancelled.is_set():
                raise Interrupted(f"{name}: stopped before `{action.what}` (interrupted)")
            if action.kind is Kind.PROVISION and not provisioning:
                _wait_for_dependencies(name, ctx)
                ctx.refresh_access()
                sync_names(ctx, only=name)  # its steps may talk to the machines it depends on
                provisioning = True
            if guest is not None and action.kind in (Kind.HALT, Kind.DESTROY):  # a trigger's session, before
                ctx._guests.pop(name, None)
                guest.close()
                guest = None
            if guest is None and _over_ssh(action, ctx):
                guest = (ctx.guest_factory or _ssh_guest)(name, ctx)
                ctx._guests[name] = guest
            ctx.reporter.line(name, action.what)
            with phase(action.what, name):
                if action.kind is Kind.PROVISION:
                    _provision(action, guest, ctx)
                elif action.kind is Kind.TRIGGER:
                    _trigger(action, guest, ctx)
                else:
                    _HANDLERS[action.kind](name, ctx)
            if action.kind is Kind.WAIT_SSH:
                ctx.reporter.line(name, f"up in {time.monotonic() - started:.1f} s")
    except BaseException:
        ctx._failed.add(name)
        raise
    finally:
        if guest is not None:
            ctx._guests.pop(name, None)
            guest.close()
        ctx._finished[name].set()
    if provisioning:
        ctx.reporter.line(name, f"provisioned in {time.monotonic() - started:.1f} s")


def _over_ssh(action: Action, ctx: Context) -> bool:
    """Whether the action talks to the machine over SSH: a step, or a trigger run in it."""
    if action.kind is Kind.TRIGGER:
        return not ctx.project.loaded.machine(action.subject).triggers[action.step - 1].on_host
    return action.kind is Kind.PROVISION


def _wait_for_dependencies(name: str, ctx: Context) -> None:
    for dependency in ctx.project.loaded.machine(name).depends_on:
        event = ctx._finished.get(dependency)
        if event is None:  # not part of this run: already up and provisioned
            continue
        if not event.is_set():
            ctx.reporter.line(name, f"waiting for `{dependency}` to be up and provisioned")
            event.wait()
        if dependency in ctx._failed:
            raise ProvisionError(f"{name}: not provisioned, because `{dependency}` (which it depends on) failed")


# -- one function per action kind ------------------------------------------------------


_CREATING = threading.Lock()


def _create(name: str, ctx: Context) -> None:
    """A new machine, from its box or from the cached layer the plan counted on (held in
    the cache until the machine's record names it)."""
    from tapers import layer_cache

    start = ctx.caching.starts.get(name) if ctx.caching else None
    if start is None or start.layer is None:
        _make(name, ctx, start, ())
        return
    with layer_cache.locked(shared=True):
        _make(name, ctx, start, _layer_folders(name, start))


def _make(name: str, ctx: Context, start: Start | None, layers: tuple[Path, ...]) -> None:
    from tapers import layer_cache
    from tapers.boxes.cache import find_box
    from tapers.engine import machine_setup as setup
    from tapers.ssh import keys

    project, backend = ctx.project, ctx.backend
    machine = project.loaded.machine(name)
    box = find_box(machine.box)
    if box is None:
        raise BoxError(f"box `{machine.box}` is not in the box cache", hint=f"tapers box build {machine.box}")
    container = project.container(name)
    if machine.placement and not backend.places_machines:
        ctx.reporter.line(name, f"`placement: {{member: {machine.placement}}}` ignored: the {backend.name} "
                                "backend runs machines on this host")
    if backend.copy_mode() == "copy":
        ctx.reporter.line(name, "no overlayfs on this host: copying the box (slower, uses more disk; see `tapers doctor`)")
    host_key = keys.generate(comment=container)
    mounts = setup.mounts(ctx.project, machine, box.user["uid"], box.user["gid"], machine.privileged, ctx.reporter)
    private = tuple(backend.network.private(address) for address in machine.private_ips)
    from tapers import locks

    # Address choice and the record claiming it, atomically: between processes by the file
    # lock, between this one's threads first by a lock they wait on.
    with _CREATING, locks.held(paths.network_lock()):
        used = {info.address for info in backend.list(prefix=CONTAINER_PREFIX) if info.address}
        net = ctx._addresses.get(name)
        if net is None or net.address in used:  # not chosen in advance, or taken since
            others = {n.address for other, n in ctx._addresses.items() if other != name}
            net = backend.network.allocate(container, used | others)
            if name in ctx._addresses:  # the machines made after it name it right (`sync_names`: those before)
                ctx._addresses[name] = net
        peers = _peers(ctx)
        files = setup.guest_files(machine, box, host_key, ctx.project_key, peers)
        record = setup.new_record(
            ctx.project.id, ctx.project.root, ctx.project_key, machine, box, net.address, net.mac, host_key.public,
            machine.privileged, peers,
        )
        if start is not None and start.layer is not None and ctx.caching:  # its first steps: in the layer
            done = [machine.provision[step - 1].key for step in start.from_cache]
            record = record.replace(provisioned={key: ctx.caching.fingerprints[name][key] for key in done},
                                    inputs={key: ctx.caching.inputs[name][key] for key in done},
                                    layers=layer_cache.stack(start.layer))
        spec = MachineSpec(
            container=container,
            rootfs=box.rootfs,
            hostname=machine.hostname,
            network=net,
            limits=limits.wanted(machine),
            files=files,
            private=private,
            mounts=mounts,
            placement=machine.placement if backend.places_machines else None,
            privileged=machine.privileged,
            nesting=machine.nesting,
            raw=machine.raw,
            layers=layers,
        )
        backend.create(spec, record)
    backend.save_record(container, record.replace(phase=READY))
    if start is not None and ctx.caching is not None:
        from tapers.engine.caching import leave_out

        ctx.caching.made(machine, start, leave_out(tuple(f.path for f in files)))


def _layer_folders(name: str, start: Start) -> tuple[Path, ...]:
    """The folders of the cached layers a new machine stands on, the top one first (the plan
    counted on them: they must be there)."""
    from tapers import layer_cache

    assert start.layer is not None
    layers = [layer_cache.find(key) for key in layer_cache.stack(start.layer)]
    if any(layer is None for layer in layers):
        raise CacheError(f"{name}: the cached layer of its {len(start.from_cache)} first steps is gone (pruned "
                         "since the plan was made)", hint="run `tapers up` again: it plans without it")
    layer_cache.touch(layer_cache.stack(start.layer))
    return tuple(layer.disk for layer in layers if layer is not None)


def _recreate(name: str, ctx: Context) -> None:
    destroy_container(ctx.backend, ctx.project.container(name))
    _create(name, ctx)


def _start(name: str, ctx: Context) -> None:
    from tapers.engine import machine_setup as setup

    setup.host_folders(ctx.project, ctx.project.loaded.machine(name), ctx.reporter)
    ctx.backend.start(ctx.project.container(name))


def _freeze(name: str, ctx: Context) -> None:
    ctx.backend.freeze(ctx.project.container(name))


def _unfreeze(name: str, ctx: Context) -> None:
    ctx.backend.unfreeze(ctx.project.container(name))


def _authorize_key(name: str, ctx: Context) -> None:
    container = ctx.project.container(name)
    record = _record_of(ctx, container)
    script = (
        'home=$(getent passwd "$U" | cut -d: -f6) && install -d -m 0700 -o "$U" -g "$U" "$home/.ssh" && '
        'printf "%s\\n" "$KEY" > "$home/.ssh/authorized_keys" && '
        'chown "$U:$U" "$home/.ssh/authorized_keys" && chmod 0600 "$home/.ssh/authorized_keys"'
    )
    code = ctx.backend.run(container, ["/bin/sh", "-c", script], env={"U": record.user, "KEY": ctx.project_key})
    if code != 0:
        raise StateError(f"could not authorize the project key in machine `{name}` (exit code {code})")
    ctx.backend.save_record(container, record.replace(authorized_key=ctx.project_key))
    ctx._authorized.add(name)  # the login that follows proves it took


def _wait_ssh(name: str, ctx: Context) -> None:
    from tapers.engine.access import target_for

    container = ctx.project.container(name)
    target = target_for(name, container, _record_of(ctx, container))
    if ctx.ssh_check is not None:
        ctx.ssh_check(target, ctx.project.paths.private_key, ctx.ssh_timeout)
        return
    from tapers.ssh.session import wait_for_logins

    wait_for_logins(target, ctx.project.paths.private_key, ctx.ssh_timeout,
                    lambda: ctx.backend.logins_refused(container), log_in=name in ctx._authorized)


def _forward_ports(name: str, ctx: Context) -> None:
    machine = ctx.project.loaded.machine(name)
    container = ctx.project.container(name)
    record = _record_of(ctx, container)
    wanted = [(p.host_ip, p.host, p.protocol, p.guest, p.auto_correct) for p in machine.ports]
    if machine.ports and not record.ports:
        # Ports recorded before the first rule is made: a record without ports has no rules
        # (`remove_port_rules`). One that has ports keeps them until the new rules are made
        # (they replace the old ones in one step): if that fails, the next `up` tries again.
        asked = tuple(PortRecord(p.host_ip, p.host, p.protocol, p.guest, p.host) for p in machine.ports)
        ctx.backend.save_record(container, record.replace(ports=asked))
    from tapers import locks

    with ctx._ports_guard, locks.held(paths.network_lock()):  # (not while a sweep reads: `_close_stray_ports`)
        forwards = ctx.backend.network.forward(container, wanted, record.address)
    for forward, port in zip(forwards, machine.ports, strict=True):
        if forward.host != port.host:
            ctx.reporter.line(name, f"host port {port.host} is taken: forwarding {forward.host_ip}:{forward.host} instead")
    made = tuple(PortRecord(f.host_ip, f.host, f.protocol, f.guest, p.host)
                 for f, p in zip(forwards, machine.ports, strict=True))
    ctx.backend.save_record(container, record.replace(ports=made))


def _halt(name: str, ctx: Context) -> None:
    container = ctx.project.container(name)
    remove_port_rules(ctx.backend, container)
    clean = ctx.backend.stop(container, ctx.halt_timeout)
    if not clean:
        ctx.reporter.line(name, f"did not shut down within {ctx.halt_timeout:.0f} s: forced off")


def _destroy(name: str, ctx: Context) -> None:
    destroy_container(ctx.backend, ctx.project.container(name))


def destroy_container(backend: Backend, container: str) -> None:
    """Mark it `destroying` (killed from here on, the next `up` makes it again), take away
    the host ports leading to it, destroy it."""
    info = backend.inspect(container)
    if info is not None and info.record:
        backend.save_record(container, info.record.replace(phase=DESTROYING))
    remove_port_rules(backend, container, info)
    backend.destroy(container)


def remove_port_rules(backend: Backend, container: str, info: ContainerInfo | None = None) -> None:
    """Take away the host ports leading to the machine (`info`: as just read, if it was);
    none to look for when its record has no ports (`_forward_ports` records them before it
    makes the first rule)."""
    info = info or backend.inspect(container)
    if info is None or info.record is None or info.record.ports:
        backend.network.unforward(container)


def _set_limits(name: str, ctx: Context) -> None:
    limits.set_limits(ctx.backend, ctx.project.container(name), limits.wanted(ctx.project.loaded.machine(name)))


def _reconfigure(name: str, ctx: Context) -> None:
    from tapers.engine import machine_setup as setup

    machine = ctx.project.loaded.machine(name)
    container = ctx.project.container(name)
    private = tuple(ctx.backend.network.private(address) for address in machine.private_ips)
    record = _record_of(ctx, container)
    mounts = setup.mounts(ctx.project, machine, record.uid, record.gid, privileged_was(record), ctx.reporter)
    ctx.backend.reconfigure(container, machine.hostname, private, mounts, setup.hostname_files(machine), machine.nesting,
                            machine.raw)
    _record_applied(ctx, container, machine, RESTART_KEYS, hosts=setup.hosts_digest(machine))


def _record_applied(ctx: Context, container: str, machine: Machine, keys: tuple[str, ...], **more: Any) -> None:
    record = _record_of(ctx, container)
    wanted = desired_settings(machine)
    applied = {**record.applied, **{key: wanted[key] for key in keys}}
    ctx.backend.save_record(container, record.replace(applied=applied, **more))


def sync_names(ctx: Context, only: str | None = None) -> list[str]:
    """Rewrite /etc/hosts in running machines whose copy is out of date (side by side);
    the machines it rewrote."""
    from tapers.engine import names
    from tapers.engine.observe import observe

    with ctx._access_guard:
        observed = observe(ctx.project, ctx.backend)
        peers = names.table(ctx.project, observed)
        stale = []
        for machine in ctx.project.machines:
            info = observed.machines.get(machine.name)
            if (only and machine.name != only) or info is None or info.state is not State.RUNNING:
                continue
            text = names.hosts_file(machine, peers)
            if info.record is not None and info.record.ready and info.record.hosts != names.digest(text):
                stale.append((machine.name, info.name, info.record, text))
        if len(stale) == 1:
            _write_hosts(ctx, *stale[0])
        elif stale:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(8, len(stale)), thread_name_prefix="tapers-hosts") as pool:
                list(pool.map(lambda args: _write_hosts(ctx, *args), stale))  # the first error is raised
    return [machine for machine, *_ in stale]


def _write_hosts(ctx: Context, machine: str, container: str, record: Record, text: str) -> None:
    from tapers.engine import names

    script = 'printf "%s" "$HOSTS" > /etc/hosts'
    code = ctx.backend.run(container, ["/bin/sh", "-c", script], env={"HOSTS": text})
    if code != 0:
        raise StateError(f"could not update /etc/hosts in machine `{machine}` (exit code {code})")
    ctx.backend.save_record(container, record.replace(hosts=names.digest(text)))


def _provision(action: Action, guest: Any, ctx: Context) -> None:
    from tapers.provision import fingerprint_of, inputs
    from tapers.provision.runner import run_step

    name, container = action.subject, ctx.project.container(action.subject)
    step = _step(ctx, action)
    found = inputs(step, ctx.project.root)
    ran = fingerprint_of(found)

    def succeeded() -> None:
        record = _record_of(ctx, container)
        failed = None if record.provision_failed == step.key else record.provision_failed
        ctx.backend.save_record(container, record.replace(provisioned={**record.provisioned, step.key: ran},
                                                          inputs={**record.inputs, step.key: found},
                                                          provision_failed=failed))

    started = time.monotonic()
    try:
        run_step(step, guest, succeeded)
    except TapersError:
        ctx.backend.save_record(container, _record_of(ctx, container).replace(provision_failed=step.key))
        raise
    if ctx.caching is not None:
        machine = ctx.project.loaded.machine(name)
        ctx.caching.step_done(machine, step.index, time.monotonic() - started, ran, container, ctx.backend,
                              ctx.reporter, machine.box)


def _require_approved_play(ctx: Context, machine: str, step: Step, found: dict[str, str]) -> None:
    """A play is checked again as it starts, on the inputs it copies: a machine may have
    written the project folder since the plan was approved."""
    from tapers.engine import trust

    play = trust.HostPlay(machine, step, found)
    trust.require_out_of_reach(ctx.project, play)
    trust.require_unchanged(ctx.project, play, f"`{machine}` {step.label}", "what it reads")


def _trigger(action: Action, guest: Any, ctx: Context) -> None:
    """Run a trigger; one that fails with `on_error: continue` is said, and the machine's
    command goes on."""
    from tapers.engine import triggers

    name = action.subject
    trigger = ctx.project.loaded.machine(name).triggers[action.step - 1]
    try:
        if trigger.on_host:
            triggers.run_on_host(ctx.project, name, trigger, action.event, ctx.reporter)
        else:
            triggers.run_in_machine(name, trigger, action.event, guest)
    except TapersError as exc:
        if trigger.on_error != "continue":
            raise
        ctx.reporter.line(name, f"{trigger.label} failed; going on (on_error: continue): {exc.message}")


def _ssh_guest(name: str, ctx: Context) -> SshGuest:
    from tapers.engine import trust
    from tapers.engine.access import target_for, write_play_access
    from tapers.engine.observe import observe
    from tapers.provision.runner import SshGuest

    container = ctx.project.container(name)
    record = _record_of(ctx, container)
    paths_ = ctx.project.paths
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return SshGuest(
        target=target_for(name, container, record),
        identity=paths_.private_key,
        root=ctx.project.root,
        home=record.home,
        inventory=lambda folder: write_play_access(ctx.project, observe(ctx.project, ctx.backend), folder),
        check_play=lambda step, found: _require_approved_play(ctx, name, step, found),
        log_path=paths_.logs / f"{stamp}-{name}.log",
        reporter=ctx.reporter,
        backend=ctx.backend,
        ssh_timeout=ctx.ssh_timeout,
        hidden_from_plays=lambda: trust.hidden_from_plays(ctx.project, ctx.backend),
    )


_HANDLERS: dict[Kind, Callable[[str, Context], None]] = {
    Kind.CREATE: _create,
    Kind.RECREATE: _recreate,
    Kind.START: _start,
    Kind.UNFREEZE: _unfreeze,
    Kind.AUTHORIZE_KEY: _authorize_key,
    Kind.WAIT_SSH: _wait_ssh,
    Kind.SET_LIMITS: _set_limits,
    Kind.FORWARD_PORTS: _forward_ports,
    Kind.RECONFIGURE: _reconfigure,
    Kind.HALT: _halt,
    Kind.FREEZE: _freeze,
    Kind.DESTROY: _destroy,
}


# -- helpers -----------------------------------------------------------------------------


def _record_of(ctx: Context, container: str) -> Record:
    info = ctx.backend.inspect(container)
    if info is None or info.record is None:
        raise StateError(f"container `{container}` disappeared while tapers was working on it")
    return info.record



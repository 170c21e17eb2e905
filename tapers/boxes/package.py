"""`tapers package`: a machine as a box archive others can `tapers box add`.

The archive holds `box.json` and `rootfs/` (the box and every change made in the machine),
read while the machine is held still (frozen if it runs), without its host key or the
project's authorized key.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import tempfile
import uuid
from pathlib import Path

from tapers import paths
from tapers.backend.api import Backend
from tapers.record import Record
from tapers.errors import BoxError
from tapers.events import Reporter

EXCLUDED = (
    "./etc/ssh/ssh_host_*",
    "./home/*/.ssh/authorized_keys",
    "./root/.ssh/authorized_keys",
    "./tmp/*",
    "./var/tmp/*",
    "./var/log/journal/*",
)


def package(backend: Backend, container: str, record: Record | None, output: Path, name: str | None,
            reporter: Reporter) -> dict:
    machine = record.machine if record else container
    meta = {
        "name": name or (record.box.name if record else "packaged"),
        "version": dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d.%H%M%S"),
        "source": f"package of `{machine}` ({container}), made from {record.box if record else 'an unknown box'}",
        "format": "tapers-box/1",
    }
    from tapers import project_files

    paths.host_run_dir().mkdir(parents=True, exist_ok=True)
    # A new file under a name nobody could have planted a link at; renamed over `output` at
    # the end (a link at `output` is replaced, never written through). It is the user's.
    partial = output.with_name(f".{output.name}.{uuid.uuid4().hex[:12]}.part")
    archive = os.fdopen(project_files.create(partial, 0o644), "wb")
    try:
        with archive, tempfile.TemporaryDirectory(dir=paths.host_run_dir()) as scratch:
            (Path(scratch) / "box.json").write_text(json.dumps(meta, indent=2) + "\n")
            with backend.root_view(container) as view:
                reporter.line(machine, f"packaging into {output}")
                command = ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--one-file-system", "-czf",
                           "-", "-C", scratch, "box.json", "-C", str(view), "--transform", "s,^\\.,rootfs,"]
                command += [f"--exclude={pattern}" for pattern in EXCLUDED] + ["."]
                result = subprocess.run(backend.files_command(command), stdout=archive, stderr=subprocess.PIPE,
                                        text=True)
        if result.returncode > 1:  # 1: a file changed while read, which a held-still machine cannot cause
            raise BoxError(f"packaging `{container}` failed: {result.stderr.strip()[-500:]}")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, output)
    return meta

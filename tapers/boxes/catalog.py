"""Vagrant-style box catalogs: a JSON document listing versions of a box and where each is.

    {"name": "team/web", "versions": [{"version": "1.2.0",
      "providers": [{"name": "lxc", "url": "https://.../web-1.2.0.box",
                     "checksum_type": "sha256", "checksum": "..."}]}]}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from tapers.errors import BoxError, InvalidBoxError, UsageError

PROVIDERS = ("tapers", "lxc")
_CONSTRAINT = re.compile(r"^\s*(~>|>=|<=|=|>|<)?\s*([0-9A-Za-z][0-9A-Za-z.+_-]*)\s*$")


@dataclass(frozen=True)
class Release:
    name: str
    version: str
    url: str
    sha256: str | None


def version_key(version: str) -> tuple:
    """1.10.0 > 1.9.2; numbers compare as numbers, the rest as text."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"[.+_-]", version))


def satisfies(version: str, constraint: str | None) -> bool:
    """Vagrant-style constraints, comma-separated: `>= 1.0, < 2.0`, `~> 1.2`, `= 1.2.3`, `1.2.3`."""
    if not constraint:
        return True
    for clause in constraint.split(","):
        match = _CONSTRAINT.match(clause)
        if not match:
            raise UsageError(f"`{clause.strip()}` is not a version constraint", hint="e.g. `>= 1.0, < 2.0` or `~> 1.2`")
        op, wanted = match.group(1) or "=", match.group(2)
        have, want = version_key(version), version_key(wanted)
        if op == "~>":
            prefix = wanted.split(".")[:-1] or wanted.split(".")
            if version.split(".")[: len(prefix)] != prefix or have < want:
                return False
        elif not {"=": have == want, ">=": have >= want, "<=": have <= want, ">": have > want, "<": have < want}[op]:
            return False
    return True


def parse(text: str, source: str) -> tuple[str, list[Release]]:
    """(box name, releases newest first) of a catalog."""
    from tapers.boxes.cache import check_box_name, check_version

    try:
        data = json.loads(text)
        name = check_box_name(data["name"], f"catalog {source}")
        releases = []
        for entry in data["versions"]:
            for provider in entry.get("providers", []):
                if provider.get("name") in PROVIDERS:
                    kind = (provider.get("checksum_type") or "").lower()
                    if provider.get("checksum") and kind != "sha256":
                        raise InvalidBoxError(f"catalog {source}: checksum type `{kind}` (tapers checks sha256)")
                    version = check_version(str(entry["version"]), f"catalog {source}")
                    url = provider["url"]
                    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                        raise InvalidBoxError(f"catalog {source}: version {version} has no http(s) URL; refused")
                    checksum = provider.get("checksum")
                    if checksum is not None and not (isinstance(checksum, str) and re.fullmatch(r"[0-9a-fA-F]{64}", checksum)):
                        raise InvalidBoxError(f"catalog {source}: version {version} has a malformed sha256; refused")
                    releases.append(Release(name, version, url, checksum))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise InvalidBoxError(f"{source} is not a box catalog: {type(exc).__name__}: {str(exc)[:200]}") from None
    return name, sorted(releases, key=lambda r: version_key(r.version), reverse=True)


def choose(releases: list[Release], constraint: str | None, source: str) -> Release:
    for release in releases:
        if satisfies(release.version, constraint):
            return release
    versions = ", ".join(r.version for r in releases) or "none for lxc"
    raise BoxError(f"no version in {source} matches `{constraint}`", hint=f"versions there: {versions}")


def looks_like_catalog(head: bytes) -> bool:
    return head.lstrip()[:1] == b"{"

"""nftables as tapers uses it: a script applied as one transaction, and the rules of its
table read back.

Through libnftables, the library the `nft` tool is a front end of, in this process where
it loads: a netlink round trip instead of starting a program (15-20 ms each on a busy
2-core host, several per `up` and `destroy`). Else the `nft` tool, with the same text.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import threading
from typing import Any

from tapers.errors import HostError

_OUTPUT_JSON = 1 << 4  # NFT_CTX_OUTPUT_JSON
_loaded: list[Any] = []
_loading = threading.Lock()


def run(script: str, json_output: bool = False) -> tuple[bool, str, str]:
    """Apply `script` (what `nft -f` reads); (succeeded, its output, its errors)."""
    library = _library()
    if library is None:
        argv = ["nft", *(["-j"] if json_output else []), "-f", "-"]
        try:
            result = subprocess.run(argv, input=script, capture_output=True, text=True)
        except FileNotFoundError:
            raise HostError("cannot manage the tapers network: `nft` is not installed",
                            hint="apt-get install nftables") from None
        return result.returncode == 0, result.stdout, result.stderr
    context = library.nft_ctx_new(0)
    if not context:
        raise HostError("cannot manage the tapers network: libnftables could not start")
    try:
        library.nft_ctx_buffer_output(context)
        library.nft_ctx_buffer_error(context)
        if json_output:
            library.nft_ctx_output_set_flags(context, _OUTPUT_JSON)
        failed = library.nft_run_cmd_from_buffer(context, script.encode())
        output = library.nft_ctx_get_output_buffer(context) or b""
        errors = library.nft_ctx_get_error_buffer(context) or b""
        return failed == 0, output.decode(errors="replace"), errors.decode(errors="replace")
    finally:
        library.nft_ctx_free(context)


def apply(script: str, what: str) -> str:
    """`run`, or a HostError saying `what` could not be done and why."""
    done, output, errors = run(script)
    if not done:
        raise HostError(f"cannot {what}: {errors.strip()}",
                        hint="run `tapers doctor`; tapers needs root to manage its network")
    return output


def rules(table: str) -> list[dict[str, Any]]:
    """The rules of `table` (ip family) as nftables' JSON gives them; [] when it doesn't exist."""
    done, output, _ = run(f"list table ip {table}", json_output=True)
    if not done:
        return []
    return [item["rule"] for item in json.loads(output).get("nftables", []) if "rule" in item]


def _library() -> Any:
    with _loading:
        if not _loaded:
            _loaded.append(_load())
        return _loaded[0]


def _load() -> Any:
    try:
        library = ctypes.CDLL("libnftables.so.1")
    except OSError:
        return None
    library.nft_ctx_new.restype = ctypes.c_void_p
    library.nft_ctx_new.argtypes = [ctypes.c_uint32]
    for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error", "nft_ctx_free"):
        getattr(library, name).argtypes = [ctypes.c_void_p]
    library.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    library.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    library.nft_run_cmd_from_buffer.restype = ctypes.c_int
    for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
        getattr(library, name).argtypes = [ctypes.c_void_p]
        getattr(library, name).restype = ctypes.c_char_p
    return library

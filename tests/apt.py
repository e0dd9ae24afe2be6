"""Debian packages the tests need (chromium, prometheus): installed once when missing and
possible (root with apt-get, bounded in time), or a reason to skip."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

#: Bounds each of `apt-get update` and `apt-get install`.
INSTALL_TIMEOUT_S = 420
_updated = False


def install(package: str, binary: Path) -> str | None:
    """Make `binary` exist by installing `package`; None when it does, else why not."""
    global _updated
    if binary.exists():
        return None
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "not running as root, so it cannot be installed here"
    if shutil.which("apt-get") is None:
        return "apt-get is not available to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    commands = [["apt-get", "install", "-y", "-qq", "--no-install-recommends", package]]
    if not _updated:
        commands.insert(0, ["apt-get", "update", "-qq"])
    try:
        for command in commands:
            done = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S
            )
            if done.returncode != 0:
                return f"`{' '.join(command)}` failed: {done.stderr.strip()[-500:]}"
            _updated = _updated or command[1] == "update"
    except subprocess.TimeoutExpired as exc:
        return f"`{' '.join(map(str, exc.cmd))}` took over {INSTALL_TIMEOUT_S} s"
    return None if binary.exists() else f"apt-get installed no {binary}"

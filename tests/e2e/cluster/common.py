"""What every part of the cluster harness shares: the cache and work directories, logging, running a command."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# Builds live outside the clone, so a fresh clone (CI's) finds them warm; NFS_CSI_CACHE moves them.
CACHE = Path(os.environ.get("NFS_CSI_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nfs-csi-e2e")
WORK = ROOT / ".work" / "cluster"  # the running cluster's state, logs and certificates (git-ignored)
_STARTED = time.monotonic()


class CommandFailed(Exception):
    """An external command exited non-zero or timed out; the message carries its output's tail."""


def log(message: str) -> None:
    print(f"[cluster {time.monotonic() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def run(argv: list[str], timeout: float, cwd: Path | None = None, env: dict[str, str] | None = None,
        input: str | None = None, check: bool = True) -> str:
    """Run argv (never a shell) with a timeout that kills its whole process group; its stdout, or CommandFailed."""
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.communicate()
        raise CommandFailed(f"{' '.join(argv)} did not finish within {timeout:.0f} s") from None
    if check and process.returncode != 0:
        raise CommandFailed(f"{' '.join(argv)} exited {process.returncode}:\n{(err or out)[-4000:]}")
    return out

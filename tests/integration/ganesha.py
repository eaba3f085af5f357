"""A real NFS server for tests: nfs-ganesha (FSAL_VFS, NFSv4 only, loopback, a high port, no rpcbind)."""

from __future__ import annotations

import ctypes
import glob
import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from domain.model import ShareRef

PACKAGES = ("nfs-ganesha", "nfs-ganesha-vfs", "libnfs-utils")
SERVER = "127.0.0.1"
PSEUDO = "/exports"  # the NFSv4 path of the export; the stand-in serves the same directory under this share
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
CLIENT_TIMEOUT = 10.0

CONFIG = """\
NFS_CORE_PARAM {{
    NFS_Port = {port};
    Bind_Addr = {server};
    Protocols = 4;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
    Plugins_Dir = "{plugins}";
}}
NFSV4 {{
    Graceless = true;
    RecoveryBackend = fs;
    RecoveryRoot = "{state}";
    Minor_Versions = 0, 1;
}}
NFS_KRB5 {{
    Active_krb5 = false;
}}
EXPORT_DEFAULTS {{
    Attr_Expiration_Time = 0;
}}
EXPORT {{
    Export_Id = 1;
    Path = "{export}";
    Pseudo = "{pseudo}";
    Protocols = 4;
    Transports = TCP;
    Access_Type = RW;
    Squash = No_Root_Squash;
    SecType = sys;
    Attr_Expiration_Time = 0;
    FSAL {{
        Name = VFS;
    }}
}}
LOG {{
    Default_Log_Level = EVENT;
}}
"""


class GaneshaUnavailable(Exception):
    """nfs-ganesha could not be installed or started; the message says why."""


def _run(argv: list[str], timeout: float, **env: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env={**os.environ, **env}, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as err:
        raise GaneshaUnavailable(f"{' '.join(argv)} did not finish within {timeout} s") from err


def _plugins_dir() -> str | None:
    found = glob.glob("/usr/lib/*/ganesha/libfsalvfs.so") + glob.glob("/usr/lib*/ganesha/libfsalvfs.so")
    return os.path.dirname(found[0]) if found else None


def _installed() -> bool:
    return bool(shutil.which("ganesha.nfsd") and shutil.which("nfs-ls") and shutil.which("nfs-cat") and _plugins_dir())


def install() -> None:
    """Install the Debian packages once; the machine's policy-rc.d decides whether their services start (here: not)."""
    if _installed():
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise GaneshaUnavailable(f"nfs-ganesha is not installed, and installing {' '.join(PACKAGES)} needs root and apt-get")
    update = _run(["apt-get", "update", "-qq"], timeout=300)
    if update.returncode != 0:
        raise GaneshaUnavailable(f"apt-get update failed ({update.returncode}):\n{update.stderr[-2000:]}")
    result = _run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES], timeout=600, DEBIAN_FRONTEND="noninteractive"
    )
    if result.returncode != 0 or not _installed():
        raise GaneshaUnavailable(f"apt-get install {' '.join(PACKAGES)} failed ({result.returncode}):\n{result.stderr[-2000:]}")


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the test process dies without stopping it (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((SERVER, 0))
        return int(probe.getsockname()[1])


@dataclass
class NfsEntry:
    name: str
    kind: str  # "dir", "file", "symlink" or "other", from nfs-ls's mode column
    mode: int


@dataclass
class Ganesha:
    """One running ganesha.nfsd, a child of the test process, exporting ``export_dir`` as SERVER:PSEUDO."""

    base: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    started_in: float = 0.0
    _cases: itertools.count[int] = field(default_factory=itertools.count)

    server = SERVER
    pseudo = PSEUDO

    @property
    def standin_root(self) -> Path:
        """$NFS_STANDIN_ROOT under which the mount.nfs stand-in serves SERVER:PSEUDO from the same directory."""
        return self.base / "standin-root"

    @property
    def export_dir(self) -> Path:
        return self.standin_root / SERVER / PSEUDO.strip("/")

    @property
    def log(self) -> Path:
        return self.base / "ganesha.log"

    @property
    def share(self) -> ShareRef:
        return ShareRef(SERVER, PSEUDO)

    def start(self) -> None:
        plugins = _plugins_dir()
        assert plugins is not None
        self.export_dir.mkdir(parents=True, exist_ok=True)
        (self.base / "state").mkdir(exist_ok=True)
        last = ""
        fixed = self.port
        for _ in range(3):  # a free port can be taken between the probe and ganesha's bind
            self.port = fixed or free_port()
            config = self.base / "ganesha.conf"
            config.write_text(
                CONFIG.format(
                    port=self.port, server=SERVER, plugins=plugins, state=self.base / "state",
                    export=self.export_dir, pseudo=PSEUDO,
                )
            )
            started = time.monotonic()
            self.log.write_bytes(b"")
            self.process = subprocess.Popen(
                ["ganesha.nfsd", "-F", "-f", str(config), "-L", str(self.log), "-p", str(self.base / "ganesha.pid"), "-N", "NIV_EVENT"],
                cwd=self.base, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent,
            )
            last = self._wait_until_serving(started)
            if not last:
                self.started_in = time.monotonic() - started
                return
            self.stop()
        raise GaneshaUnavailable(f"ganesha did not serve {SERVER}:{PSEUDO}: {last}\n--- {self.log} ---\n{self._log_tail()}")

    def _wait_until_serving(self, started: float) -> str:
        """Empty when nfs-ls lists the export; else why not."""
        assert self.process is not None
        reason = "no answer yet"
        while time.monotonic() - started < START_TIMEOUT:
            if self.process.poll() is not None:
                return f"ganesha.nfsd exited with {self.process.returncode}"
            try:
                result = _run(["nfs-ls", self.url("")], timeout=5)
            except GaneshaUnavailable as err:
                reason = str(err)
            else:
                if result.returncode == 0:
                    return ""
                reason = (result.stderr or result.stdout).strip()
            time.sleep(0.1)
        return f"not serving after {START_TIMEOUT} s (last: {reason})"

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT)

    def new_share(self, prefix: str = "case") -> tuple[ShareRef, Path]:
        """A fresh, empty directory of the export, and the share that names it."""
        name = f"{prefix}{next(self._cases)}"
        path = self.export_dir / name
        path.mkdir()
        return ShareRef(SERVER, f"{PSEUDO}/{name}"), path

    # -- an independent NFS client: libnfs's nfs-ls and nfs-cat -----------------------------------------------------

    def url(self, path: str) -> str:
        """A libnfs URL for ``path`` below the export (path relative to PSEUDO, or an absolute NFS path)."""
        full = path if path.startswith("/") else f"{PSEUDO}/{path}".rstrip("/")
        return f"nfs://{SERVER}{full}?version=4&nfsport={self.port}"

    def ls(self, path: str) -> dict[str, NfsEntry]:
        """Entries of a directory on the server, as libnfs sees them over NFSv4; raises FileNotFoundError if absent."""
        result = _run(["nfs-ls", self.url(path)], timeout=CLIENT_TIMEOUT)
        if result.returncode != 0:
            if "NOENT" in result.stdout + result.stderr:
                raise FileNotFoundError(path)
            raise AssertionError(f"nfs-ls {path} failed ({result.returncode}): {result.stdout}{result.stderr}")
        entries: dict[str, NfsEntry] = {}
        for line in result.stdout.splitlines():
            fields = line.split(None, 5)
            if len(fields) < 6:
                continue
            mode, name = fields[0], fields[5]
            kind = {"d": "dir", "-": "file", "l": "symlink"}.get(mode[0], "other")
            bits = sum(1 << (8 - i) for i, c in enumerate(mode[1:10]) if c != "-")
            entries[name] = NfsEntry(name, kind, bits)
        return entries

    def cat(self, path: str) -> bytes:
        result = subprocess.run(["nfs-cat", self.url(path)], capture_output=True, timeout=CLIENT_TIMEOUT, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise AssertionError(f"nfs-cat {path} failed ({result.returncode}): {result.stderr.decode(errors='replace')}")
        return result.stdout


_RUNNING: dict[str, Ganesha] = {}
_FAILED: list[str] = []  # why the session's server could not start: every later test fails at once with it


def shared_ganesha(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Ganesha:
    """One server per test session, whichever folder asks first; stopped when the session ends."""
    server = _RUNNING.get("session")
    if server is not None:
        return server
    if _FAILED:
        pytest.fail(_FAILED[0], pytrace=False)
    try:
        install()
        server = Ganesha(tmp_path_factory.mktemp("ganesha"))
        server.start()
    except GaneshaUnavailable as err:
        _FAILED.append(f"nfs-ganesha is needed here and could not be started: {err}")
        pytest.fail(_FAILED[0], pytrace=False)
    _RUNNING["session"] = server
    config.add_cleanup(_stop_shared)
    return server


def _stop_shared() -> None:
    server = _RUNNING.pop("session", None)
    if server is not None:
        server.stop()


@pytest.fixture(scope="session")
def ganesha(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Ganesha:
    return shared_ganesha(request.config, tmp_path_factory)


def main(argv: list[str]) -> int:
    """scripts/ganesha: serve until SIGINT or SIGTERM, printing how to point the driver and the stand-in at it."""
    import tempfile

    base = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="ganesha-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        install()
        server = Ganesha(base)
        server.start()
    except GaneshaUnavailable as err:
        print(f"ganesha: {err}", flush=True)
        return 1
    print(
        f"ganesha.nfsd pid {server.process.pid if server.process else '?'} serves {SERVER}:{PSEUDO} (NFSv4) on port "
        f"{server.port}, started in {server.started_in:.2f} s; log {server.log}\n"
        f"  export directory:  {server.export_dir}\n"
        f"  node stand-in:     NFS_STANDIN_ROOT={server.standin_root}\n"
        f"  controller flags:  --mode controller --storage userspace --nfs-version 4.1 --nfs-port {server.port}\n"
        f"  StorageClass:      server={SERVER} share={PSEUDO}\n"
        f"  check with:        nfs-ls '{server.url('')}'",
        flush=True,
    )
    stop = {"now": False}

    def request_stop(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        while not stop["now"] and server.process is not None and server.process.poll() is None:
            time.sleep(0.2)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))

"""The cluster's container images, made here (no registry is reachable) as OCI archives for `ctr images import`.

- the driver: a Debian bookworm rootfs (mmdebstrap) with python3, nfs-common, util-linux and mount, and a
  virtualenv at /opt/nfs-csi-driver holding the project's wheel and its dependencies: what the Dockerfile builds;
- the CSI sidecars and snapshot-controller: each upstream binary alone, built from its module (build.py);
- what Kubernetes' e2e specs ask for by name: pause (pause.c), agnhost (built from the module, with busybox beside
  it for its shell), and busybox under the names of the test images whose specs only run shell commands.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.cluster.build import PAUSE_VERSION, PROVISIONER, RESIZER, SNAPSHOTTER, Binaries, mark, stamp_of, up_to_date
from tests.e2e.cluster.common import CACHE, ROOT, log, run

LOCAL = "nfs-csi-e2e.local"  # the registry part of every image built here that no spec names
DRIVER_IMAGE = f"{LOCAL}/nfs-csi-driver"
PAUSE_IMAGE = f"registry.k8s.io/pause:{PAUSE_VERSION}"
E2E_REGISTRY = "registry.k8s.io/e2e-test-images"
AGNHOST_IMAGE = f"{E2E_REGISTRY}/agnhost:2.56"
# Specs that use these images only run shell commands in them (test/utils/image/manifest.go names them).
BUSYBOX_NAMES = (
    f"{E2E_REGISTRY}/busybox:1.37.0-1",
    f"{E2E_REGISTRY}/busybox:1.36.1-1",
    f"{E2E_REGISTRY}/nginx:1.14-4",
    f"{E2E_REGISTRY}/jessie-dnsutils:1.7",
)
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SECURITY = "http://deb.debian.org/debian-security"
# As the Dockerfile's runtime stage: the interpreter, mount.nfs (nfs-common), umount (mount), util-linux.
DRIVER_PACKAGES = ("python3", "python3-venv", "nfs-common", "util-linux", "mount", "ca-certificates")
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MMDEBSTRAP_TIMEOUT = 1800
PIP_TIMEOUT = 900


@dataclass
class Layer:
    """An uncompressed tar built in memory from files, directories and links; gzipped when written."""

    members: list[tuple[tarfile.TarInfo, bytes | None]] = field(default_factory=list)

    def dir(self, path: str, mode: int = 0o755) -> None:
        info = tarfile.TarInfo(path.strip("/"))
        info.type, info.mode = tarfile.DIRTYPE, mode
        self.members.append((info, None))

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        info = tarfile.TarInfo(path.strip("/"))
        info.size, info.mode = len(data), mode
        self.members.append((info, data))

    def symlink(self, path: str, target: str) -> None:
        info = tarfile.TarInfo(path.strip("/"))
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
        self.members.append((info, None))

    def tar(self) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for info, data in self.members:
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return out.getvalue()


def busybox_layer(layer: Layer) -> None:
    """Debian's busybox-static at /bin/busybox with a link for each applet, and the files a shell expects."""
    busybox = Path("/bin/busybox")
    applets = run([str(busybox), "--list-full"], timeout=30).split()
    for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "tmp", "root", "var"):
        layer.dir(d, 0o1777 if d == "tmp" else 0o755)
    layer.file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in applets:
        if applet != "bin/busybox":
            layer.symlink(applet, "/bin/busybox")
    layer.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    layer.file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")


def write_archive(path: Path, names: list[str], layers: list[bytes], config: dict[str, object]) -> None:
    """An OCI image layout as a tar: the layers (already tarred) gzipped, one manifest, one index entry per name."""
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> dict[str, object]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    layer_descs = []
    diff_ids = []
    for raw in layers:
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        layer_descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                            **blob(gzip.compress(raw, compresslevel=1, mtime=0))})
    image_config = {
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": config, "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    config_desc = {"mediaType": "application/vnd.oci.image.config.v1+json",
                   **blob(json.dumps(image_config, sort_keys=True).encode())}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config_desc, "layers": layer_descs}
    manifest_desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                     **blob(json.dumps(manifest, sort_keys=True).encode()),
                     "platform": {"architecture": "amd64", "os": "linux"}}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {**manifest_desc, "annotations": {"io.containerd.image.name": name,
                                          "org.opencontainers.image.ref.name": name.rpartition(":")[2]}}
        for name in names
    ]}
    tmp = path.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        add("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        add("index.json", json.dumps(index).encode())
        for digest, data in blobs.items():
            add(f"blobs/sha256/{digest.removeprefix('sha256:')}", data)
    tmp.rename(path)


@dataclass(frozen=True)
class Image:
    names: tuple[str, ...]
    archive: Path


def binary_image(out: Path, names: list[str], binary: Path, entrypoint: list[str], cmd: list[str] | None = None,
                 with_busybox: bool = False) -> Image:
    """One program at entrypoint[0] (and busybox, if asked); rebuilt when the program's build stamp changes."""
    built_from = Path(f"{binary}.stamp").read_text() if Path(f"{binary}.stamp").exists() else \
        hashlib.sha256(binary.read_bytes()).hexdigest()
    stamp = stamp_of(*names, built_from, str(entrypoint), str(cmd), str(with_busybox), "v1")
    archive = out / f"{names[0].rpartition('/')[2].replace(':', '-')}.oci.tar"
    if not up_to_date([archive], stamp):
        layer = Layer()
        if with_busybox:
            busybox_layer(layer)
        layer.file(entrypoint[0], binary.read_bytes(), 0o755)
        config: dict[str, object] = {"Entrypoint": entrypoint, "Env": [PATH]}
        if cmd:
            config["Cmd"] = cmd
        write_archive(archive, names, [layer.tar()], config)
        mark([archive], stamp)
    return Image(tuple(names), archive)


def busybox_image(out: Path) -> Image:
    archive = out / "busybox.oci.tar"
    stamp = stamp_of(*BUSYBOX_NAMES, hashlib.sha256(Path("/bin/busybox").read_bytes()).hexdigest(), "v1")
    if not up_to_date([archive], stamp):
        layer = Layer()
        busybox_layer(layer)
        write_archive(archive, list(BUSYBOX_NAMES), [layer.tar()], {"Cmd": ["sh"], "Env": [PATH]})
        mark([archive], stamp)
    return Image(BUSYBOX_NAMES, archive)


# The driver image


def driver_base(out: Path) -> Path:
    """Debian bookworm with the driver's runtime packages, as an uncompressed tar (cached: it changes only with them)."""
    stamp = stamp_of(DEBIAN_SUITE, *DRIVER_PACKAGES, "v1")
    base = out / f"driver-base-{stamp}.tar"
    if base.exists():
        return base
    for old in out.glob("driver-base-*.tar"):
        old.unlink()
    started = time.monotonic()
    log(f"image: Debian {DEBIAN_SUITE} rootfs with {', '.join(DRIVER_PACKAGES)} (mmdebstrap; a few minutes cold)")
    tmp = base.with_suffix(".tmp.tar")
    # In a private mount namespace, so that its /proc, /sys and /dev mounts cannot outlive it on the machine.
    run(["unshare", "--mount", "--propagation", "private", "--",
         "mmdebstrap", "--quiet", "--variant=minbase", "--mode=root", "--format=tar",
         f"--include={','.join(DRIVER_PACKAGES)}",
         # No documentation or apt lists in the image (the Dockerfile removes the lists too).
         "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
         "--dpkgopt=path-exclude=/usr/share/locale/*", "--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/*",
         DEBIAN_SUITE, str(tmp), f"deb {DEBIAN_MIRROR} {DEBIAN_SUITE} main",
         f"deb {DEBIAN_SECURITY} {DEBIAN_SUITE}-security main"], timeout=MMDEBSTRAP_TIMEOUT)
    tmp.rename(base)
    log(f"image: Debian rootfs in {time.monotonic() - started:.0f} s")
    return base


def project_wheels(out: Path) -> Path:
    """The project's wheel and its dependencies' ([userspace] too), binary only, as the Dockerfile installs them."""
    wheels = out / "wheels"
    if wheels.exists():
        shutil.rmtree(wheels)
    wheels.mkdir(parents=True)
    python = ROOT / ".venv" / "bin" / "python"
    run([str(python), "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps", "-w", str(wheels),
         str(ROOT)], timeout=PIP_TIMEOUT, cwd=ROOT)
    (wheel,) = wheels.glob("nfs_csi_driver-*.whl")
    run([str(python), "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
         "--python-version=3.11", "--platform=manylinux2014_x86_64", "--platform=manylinux_2_28_x86_64",
         "--implementation=cp", "-d", str(wheels), f"{wheel}[userspace]"], timeout=PIP_TIMEOUT, cwd=ROOT)
    return wheels


def project_sources() -> tuple[str, str]:
    """(version, digest) of what goes into the project's wheel: pyproject.toml and the four packages."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    for package in ("app", "domain", "ports", "adapters"):
        for path in sorted((ROOT / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return version, digest.hexdigest()


def driver_image(out: Path) -> Image:
    """The base rootfs, and a layer with /opt/nfs-csi-driver: a virtualenv holding the wheels, made inside it."""
    base = driver_base(out)
    version, sources = project_sources()
    name = f"{DRIVER_IMAGE}:{version}"
    archive = out / "nfs-csi-driver.oci.tar"
    stamp = stamp_of(base.name, sources, name, "v2")
    if up_to_date([archive], stamp):
        return Image((name,), archive)
    wheels = project_wheels(out)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="driver-image-", dir=out) as tmp:
        rootfs = Path(tmp) / "rootfs"
        rootfs.mkdir()
        run(["tar", "-x", "-p", "--numeric-owner", "-f", str(base), "-C", str(rootfs)], timeout=600)
        shutil.copytree(wheels, rootfs / "tmp" / "wheels")
        # chroot in a private mount namespace with /proc and /dev from the host, gone when it exits.
        script = (
            "set -e; mount -t proc proc \"$1/proc\"; mount --rbind /dev \"$1/dev\"; "
            "chroot \"$1\" /usr/bin/python3 -m venv /opt/nfs-csi-driver; "
            "chroot \"$1\" /opt/nfs-csi-driver/bin/pip install --quiet --no-index --find-links /tmp/wheels "
            "--disable-pip-version-check --no-compile \"nfs-csi-driver[userspace]\"; "
            "chroot \"$1\" /opt/nfs-csi-driver/bin/nfs-csi-driver --version"
        )
        run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", str(rootfs)], timeout=PIP_TIMEOUT)
        shutil.rmtree(rootfs / "tmp" / "wheels")
        venv = io.BytesIO()
        with tarfile.open(fileobj=venv, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(rootfs / "opt", arcname="opt")
        labels = {
            "org.opencontainers.image.title": "nfs-csi-driver",
            "org.opencontainers.image.version": version,
            "org.opencontainers.image.revision": git_revision(),
        }
        config = {
            "Entrypoint": ["nfs-csi-driver"], "User": "root", "Labels": labels,
            "Env": [PATH.replace("PATH=", "PATH=/opt/nfs-csi-driver/bin:"), "PYTHONDONTWRITEBYTECODE=1",
                    "PYTHONUNBUFFERED=1"],
        }
        write_archive(archive, [name], [base.read_bytes(), venv.getvalue()], config)
    mark([archive], stamp)
    log(f"image: {name} in {time.monotonic() - started:.0f} s")
    return Image((name,), archive)


def git_revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def sidecar_name(binary: str, version: str) -> str:
    return f"{LOCAL}/{binary}:{version}"


SIDECAR_VERSIONS = {
    "csi-provisioner": PROVISIONER[1],
    "csi-snapshotter": SNAPSHOTTER[1],
    "snapshot-controller": SNAPSHOTTER[1],
    "csi-resizer": RESIZER[1],
}


def build_images(binaries: Binaries) -> list[Image]:
    out = CACHE / "images"
    out.mkdir(parents=True, exist_ok=True)
    images = [
        binary_image(out, [PAUSE_IMAGE], binaries / "pause", ["/pause"]),
        binary_image(out, [AGNHOST_IMAGE], binaries / "agnhost", ["/agnhost"], ["pause"], with_busybox=True),
        busybox_image(out),
    ]
    for binary, version in SIDECAR_VERSIONS.items():
        images.append(binary_image(out, [sidecar_name(binary, version)], binaries / binary, [f"/{binary}"]))
    images.append(driver_image(out))
    return images

"""The ground under the fuzz: a share and a node shaped like real ones (files, links, FIFOs, deep trees), and snapshots.

A real share holds more than this driver's volumes: users' files, symbolic links (some leading off the share), FIFOs
and deep trees; a real node's kubelet directory may sit behind a symbolic link. The fuzz plants all of these where
the requests it mutates will meet them, then compares snapshots of the trees taken before and after.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

DEPTH = 24
"""Levels of the deep trees: deep enough for a share below them and targets far down, cheap to walk."""


@dataclass(frozen=True)
class Terrain:
    """Where things were planted, and the names the seed requests use to reach them."""

    export: Path  # the share's directory, as the stand-in serves 127.0.0.1:/exports
    outside: Path  # a directory off the share and off the node's target parents: links lead here
    node: Path  # the node's tree: the targets' and staging paths' parents, and what is planted there
    targets: Path  # the parent of the publish targets
    stagings: Path  # the parent of the staging paths (kubelet creates each; here they exist before the fuzz)
    share_spots: tuple[str, ...]  # subDirs on the share that cross or name a file, a link, a FIFO or a deep tree
    target_spots: tuple[str, ...]  # target paths that are files, links, FIFOs, full directories or below a link
    staging_spots: tuple[str, ...]  # staging paths of the same kinds
    extra_shares: tuple[str, ...] = field(default=())  # directories of the export that mount as shares of their own


def _deep(base: Path, prefix: str) -> Path:
    path = base
    for level in range(1, DEPTH + 1):
        path = path / f"{prefix}{level}"
    path.mkdir(parents=True)
    return path


def plant(export: Path, tmp: Path) -> Terrain:
    """Plant files, links inside and outside the share, FIFOs and deep trees on the share and on the node."""
    outside = tmp / "outside"
    (outside / "secrets").mkdir(parents=True)
    (outside / "secrets" / "id_rsa").write_text("not the driver's to touch\n")
    (outside / "notes.txt").write_text("outside the share\n")

    # The share: what users and other tools leave on a real one.
    (export / "notes.txt").write_text("a user's file at the share's root\n")
    (export / "team-2").mkdir(exist_ok=True)
    (export / "team-2" / "fuzz-7").write_text("a file where a volume directory would go\n")
    (export / "team-3").mkdir(exist_ok=True)
    (export / "team-3" / "fuzz-11").symlink_to(outside)
    (export / "link-in").symlink_to("team-2")  # relative, inside the share
    (export / "link-out").symlink_to(outside)  # absolute, off the share
    (export / "link-file").symlink_to("notes.txt")
    (export / "link-dangling").symlink_to("nowhere")
    os.mkfifo(export / "fifo")
    os.mkfifo(export / "fuzz-13")  # a FIFO named like a volume the seeds create at the share's root
    deep = _deep(export / "deep", "d")
    (deep / "leaf.txt").write_text("the bottom of a deep tree\n")
    (export / "deep" / "d1" / "up").symlink_to("..")
    share_spots = (
        "notes.txt", "notes.txt/x", "link-in", "link-in/x", "link-out", "link-out/x", "link-file", "link-dangling",
        "fifo", "fifo/x", "team-2/fuzz-7", "team-3/fuzz-11", "team-3/fuzz-11/x", "deep/d1/up/x",
        "deep/" + "/".join(f"d{n}" for n in range(1, 12)) + "/new", str((deep / "leaf.txt").relative_to(export)),
    )  # fmt: skip
    extra_shares = tuple(
        "/exports/" + "/".join(["deep", *(f"d{n}" for n in range(1, level + 1))]) for level in range(0, DEPTH, 2)
    )

    # The node: kubelet's directories, one of them moved to another disk behind a symbolic link.
    node = tmp / "node"
    targets, stagings = node / "targets", node / "stagings"
    for parent in (targets, stagings):
        parent.mkdir(parents=True)
        (parent / "keep").write_text("the parent is never an empty directory\n")
        (parent / "a-file").write_text("a file where a target would go\n")
        (parent / "a-link").symlink_to(outside)
        (parent / "a-dangling-link").symlink_to("nowhere")
        os.mkfifo(parent / "a-fifo")
        (parent / "a-full").mkdir()
        (parent / "a-full" / "data").write_text("a directory that is not empty\n")
        moved = node / f"{parent.name}-moved"
        moved.mkdir()
        (parent / "linked").symlink_to(moved)
        _deep(parent / "deep", "n")
    for n in range(10):
        (stagings / f"s-{n}").mkdir()  # kubelet creates each staging directory before NodeStageVolume
        (node / "stagings-moved" / f"s-{n}").mkdir()
    kinds = ("a-file", "a-link", "a-dangling-link", "a-fifo", "a-full", "keep")
    deep_target = "/".join(f"n{n}" for n in range(1, DEPTH + 1))
    target_spots = tuple(
        str(targets / name) for name in (*kinds, "linked/t-1", "linked/t-2", f"deep/{deep_target}/t", "a-file/t")
    )
    staging_spots = tuple(str(stagings / name) for name in (*kinds, "linked/s-1", "linked/s-2", f"deep/{deep_target}"))
    return Terrain(export, outside, node, targets, stagings, share_spots, target_spots, staging_spots, extra_shares)


def plant_in_volume(directory: Path, outside: Path | None = None) -> None:
    """What a pod leaves in its volume: files, a FIFO, a link inside it and, given ``outside``, one leaving it."""
    (directory / "data.txt").write_text("a pod's data\n")
    os.mkfifo(directory / "pipe")
    (directory / "sub").mkdir()
    (directory / "sub" / "up").symlink_to("../data.txt")
    if outside is not None:
        (directory / "escape").symlink_to(outside)


@dataclass(frozen=True)
class Entry:
    kind: str  # dir, file, link, fifo, mount, other
    mode: int
    detail: str  # a file's size and digest, a link's target


def snapshot(root: Path, mount_points: set[str]) -> dict[str, Entry]:
    """Every entry below root, by path; links are never followed and mount points (a bind mount of the same
    filesystem too, which os.path.ismount misses) never entered."""
    found: dict[str, Entry] = {}

    def walk(directory: str) -> None:
        try:
            entries = list(os.scandir(directory))
        except OSError as err:
            found[directory] = Entry("unreadable", 0, err.strerror or str(err))
            return
        for entry in entries:
            info = entry.stat(follow_symlinks=False)
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISLNK(info.st_mode):
                found[entry.path] = Entry("link", 0, os.readlink(entry.path))
            elif stat.S_ISDIR(info.st_mode):
                if entry.path in mount_points:
                    found[entry.path] = Entry("mount", mode, "")
                    continue
                found[entry.path] = Entry("dir", mode, "")
                walk(entry.path)
            elif stat.S_ISREG(info.st_mode):
                with open(entry.path, "rb") as handle:
                    digest = hashlib.sha256(handle.read(1 << 20)).hexdigest()[:16]
                found[entry.path] = Entry("file", mode, f"{info.st_size}:{digest}")
            elif stat.S_ISFIFO(info.st_mode):
                found[entry.path] = Entry("fifo", mode, "")
            else:
                found[entry.path] = Entry("other", mode, "")

    walk(str(root))
    return found

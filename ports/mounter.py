"""Mounter: mount NFS sources on the host, and tell what is mounted."""

from __future__ import annotations

import abc
from typing import Sequence

from domain.model import FilesystemUsage


class Mounter(abc.ABC):
    """Host mounting.

    Implementations bound every operation in time, and answer what is mounted where without ever asking the
    mounted filesystem (no stat that can hang on a dead server), at a cost that does not grow with the number
    of mounts on the node.
    """

    @abc.abstractmethod
    def mount(self, source: str, target: str, options: Sequence[str]) -> None:
        """Mount NFS ``source`` (``server:/path``) at ``target`` with ``options``."""

    @abc.abstractmethod
    def bind_mount(self, source: str, target: str, readonly: bool) -> None:
        """Bind-mount the local directory ``source`` (a staging mount) at ``target``, read-only when asked.

        Bounded in time like ``mount``; a bind that cannot be made read-only is undone, never left writable.
        """

    @abc.abstractmethod
    def unmount(self, target: str) -> None:
        """Unmount ``target`` until it is no mount point, escalating when a plain unmount fails or hangs.

        Not mounted is OK.
        """

    @abc.abstractmethod
    def is_mount_point(self, path: str) -> bool:
        """Whether something is mounted at ``path``, any mount (a bind of the same filesystem too).

        ``path`` is resolved as the mount itself resolves it: a symbolic link among its parents is followed,
        so a target under a relocated kubelet directory is answered where its mount really is; a symbolic link
        as its last component is not (it is no mount point). Never blocks on what is mounted there.
        """

    @abc.abstractmethod
    def mounted_source(self, path: str) -> str | None:
        """The source of the topmost mount at ``path`` as the kernel's mount table shows it, or None when
        ``path`` is no mount point. For NFS that is ``server:/export/dir``, written by the kernel's NFS client
        from that mount's own root, so a bind of a subdirectory names the subdirectory. May read the whole
        mount table: for rare questions, not every call.
        """

    def mounted_sources(self, path: str) -> tuple[str, ...]:
        """The sources of every mount stacked at ``path``, bottom first, as the kernel's mount table shows them; ()
        when ``path`` is no mount point. This default answers from ``mounted_source``, which is right only for a
        mounter that never stacks two mounts at one path.
        """
        source = self.mounted_source(path)
        return () if source is None else (source,)

    @abc.abstractmethod
    def is_stale(self, path: str) -> bool:
        """Whether the mount at ``path`` answers a stat with a dead handle (ESTALE, ENOTCONN, EIO).

        Bounded in time: raise DeadlineExceeded when the stat does not return in time, Unavailable when
        earlier stats of hung mounts still hold every worker that may stat.
        """

    @abc.abstractmethod
    def filesystem_usage(self, path: str) -> FilesystemUsage:
        """Bytes and inodes of the filesystem mounted at ``path`` (statvfs).

        Bounded in time and cheap to refuse: DeadlineExceeded when the call does not return in time;
        Unavailable at once while an earlier call on the same path has not returned, or when every worker is
        held by hung calls, and when the mount answers with a dead handle (ESTALE, ENOTCONN, EIO).
        """

    @abc.abstractmethod
    def make_target(self, path: str) -> bool:
        """Create the directory ``path`` (its parent exists); whether it made it. An existing empty directory is OK.

        Never mount over data: an existing non-empty directory, a file or a symbolic link is FailedPrecondition;
        a missing parent is NotFound.
        """

    @abc.abstractmethod
    def remove_target(self, path: str) -> bool:
        """Remove the (unmounted) empty directory ``path``; whether it was there. Missing is OK; anything else
        is left in place."""

    @abc.abstractmethod
    def check_ready(self) -> None:
        """Raise FailedPrecondition when the mount helper is missing."""

"""JsonFilePublicationStore: it never writes a record it could not read back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from adapters.grpc.limits import MAX_CONTEXT_BYTES, MAX_ID_BYTES, STRING_LIMITS
from adapters.state.publications import MAX_RECORD_BYTES, JsonFilePublicationStore
from domain.errors import InvalidArgument
from domain.model import Publication
from domain.paths import MAX_NAME_BYTES, MAX_PATH_BYTES, MAX_SUBPATH_BYTES

pytestmark = pytest.mark.integration


def longest_path(base: str, limit: int, char: str = "é") -> str:
    """A path of at most ``limit`` bytes, every name as long as allowed, every byte one JSON escapes."""
    name = char * (MAX_NAME_BYTES // len(char.encode()))
    path = base
    while len((path + "/" + name).encode()) <= limit:
        path += "/" + name
    return path


def largest_valid_publication(target: str) -> Publication:
    """What the largest requests within the gRPC limits can make a node record: a static volume's handle of
    control characters (JSON escapes each to 6 bytes), a target at PATH_MAX, a source of the longest server, share
    and subDir, and the mount flags plus a context's mountOptions, all distinct."""
    server = "s" * 253
    source = f"{server}:{longest_path('', MAX_PATH_BYTES)}/{longest_path('x', MAX_SUBPATH_BYTES)}"
    options, size, n = [], 0, 0
    while size < STRING_LIMITS["mount_flags"].bytes + MAX_CONTEXT_BYTES:
        options.append(f"port={n}")
        size, n = size + len(options[-1]) + 1, n + 1
    return Publication("\x01" * MAX_ID_BYTES, target, source, tuple(options))


class TestJsonFilePublicationStore:
    def test_the_largest_record_a_valid_request_makes_is_written_and_read_back(self, tmp_path: Path) -> None:
        store = JsonFilePublicationStore(str(tmp_path / "state"))
        publication = largest_valid_publication(longest_path("", MAX_PATH_BYTES))
        size = len(publication.to_json())
        print(f"largest publication record: {size} bytes (the store reads up to {MAX_RECORD_BYTES})")
        assert 100 * 1024 < size <= MAX_RECORD_BYTES // 4  # near the worst, and far inside the bound
        store.put(publication)
        assert store.get(publication.target) == publication

    def test_a_record_it_could_not_read_back_is_refused_and_nothing_is_written(self, tmp_path: Path) -> None:
        store = JsonFilePublicationStore(str(tmp_path / "state"))
        huge = Publication("v" * (1 << 20), "/var/lib/kubelet/pods/p/volumes/v/mount", "h:/e", ())
        with pytest.raises(InvalidArgument, match="more than the 1048576 this driver reads back"):
            store.put(huge)
        assert store.get(huge.target) is None and store.count() == 0
        assert not (tmp_path / "state" / "publications").exists() or os.listdir(tmp_path / "state" / "publications") == []

    def test_a_put_makes_the_directory_when_it_is_missing_first_or_removed_since(self, tmp_path: Path) -> None:
        store = JsonFilePublicationStore(str(tmp_path / "state"))
        records = tmp_path / "state" / "publications"
        first = Publication("vol-1", "/var/lib/kubelet/pods/a/volumes/v/mount", "h:/e/1", ())
        store.put(first)
        assert (records.stat().st_mode & 0o777) == 0o700 and store.get(first.target) == first
        for name in os.listdir(records):
            os.unlink(records / name)
        records.rmdir()
        second = Publication("vol-2", "/var/lib/kubelet/pods/b/volumes/v/mount", "h:/e/2", ("ro",))
        store.put(second)
        assert store.get(second.target) == second and store.count() == 1
        names = os.listdir(records)
        assert len(names) == 1 and names[0].endswith(".json")  # no temporary file left behind

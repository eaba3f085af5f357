"""Each PublicationStore under one contract: the fake the unit tests use, and the JSON files the node keeps."""

from __future__ import annotations

import concurrent.futures
import hashlib
from pathlib import Path
from typing import Sequence

import pytest

from adapters.state.publications import JsonFilePublicationStore
from domain.errors import FailedPrecondition
from domain.model import Publication
from ports.publications import PublicationStore
from tests.fakes import FakePublicationStore


@pytest.fixture(params=["fake", "json-files"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> PublicationStore:
    return FakePublicationStore() if request.param == "fake" else JsonFilePublicationStore(str(tmp_path / "state"))


def publication(target: str, volume: str = "vol-1", *options: str) -> Publication:
    return Publication(volume, target, "127.0.0.1:/exports/vol-1", options)


class TestPublicationStore:
    def test_a_record_is_read_back_replaced_and_forgotten(self, store: PublicationStore) -> None:
        assert store.get("/t") is None and store.count() == 0
        store.put(publication("/t"))
        assert store.get("/t") == publication("/t") and store.count() == 1
        store.put(publication("/t", "vol-1", "ro"))
        assert store.get("/t") == publication("/t", "vol-1", "ro") and store.count() == 1
        store.remove("/t")
        store.remove("/t")
        assert store.get("/t") is None and store.count() == 0

    def test_targets_differing_in_one_character_are_different_records(self, store: PublicationStore) -> None:
        for target in ("/t", "/t/", "/t ", "/T", "/tä"):
            store.put(publication(target, target))
        assert {store.get(t).volume_id for t in ("/t", "/t/", "/t ", "/T", "/tä")} == {"/t", "/t/", "/t ", "/T", "/tä"}  # type: ignore[union-attr]

    def test_concurrent_writes_of_many_targets_all_land(self, store: PublicationStore) -> None:
        targets = [f"/pods/{i}/mount" for i in range(200)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda t: store.put(publication(t)), targets))
        assert store.count() == 200 and all(store.get(t) == publication(t) for t in targets)
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(store.remove, targets[::2]))
        assert store.count() == 100 and store.get(targets[0]) is None and store.get(targets[1]) == publication(targets[1])

    def test_concurrent_writes_of_one_target_leave_one_whole_record(self, store: PublicationStore) -> None:
        versions = [publication("/t", f"vol-{i}") for i in range(64)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(store.put, versions))
        assert store.get("/t") in versions and store.count() == 1


    def test_the_publications_of_a_volume_follow_every_put_and_remove(self, store: PublicationStore) -> None:
        store.put(publication("/a", "vol-1"))
        store.put(publication("/b", "vol-1"))
        store.put(publication("/c", "vol-2"))
        assert [p.target for p in store.of_volume("vol-1")] == ["/a", "/b"]
        store.put(publication("/b", "vol-2"))  # replaced by another volume's
        store.remove("/a")
        assert store.of_volume("vol-1") == [] and [p.target for p in store.of_volume("vol-2")] == ["/b", "/c"]
        assert store.of_volume("vol-3") == []

    def test_admit_sees_the_volumes_other_publications_and_a_refusal_writes_nothing(self, store: PublicationStore) -> None:
        seen: list[list[str]] = []

        def refuse(others: Sequence[Publication]) -> None:
            seen.append([p.target for p in others])
            if others:
                raise FailedPrecondition("one is enough")

        store.put(publication("/a"), refuse)
        store.put(publication("/a", "vol-1", "ro"), refuse)  # the same target is no other publication
        with pytest.raises(FailedPrecondition):
            store.put(publication("/b"), refuse)
        assert seen == [[], [], ["/a"]] and store.get("/b") is None and store.count() == 1

    def test_concurrent_admitted_puts_of_one_volume_admit_one(self, store: PublicationStore) -> None:
        def alone(others: Sequence[Publication]) -> None:
            if others:
                raise FailedPrecondition("taken")

        def put(target: str) -> bool:
            try:
                store.put(publication(target), alone)
                return True
            except FailedPrecondition:
                return False

        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            admitted = list(pool.map(put, [f"/pods/{i}" for i in range(32)]))
        assert admitted.count(True) == 1 and len(store.of_volume("vol-1")) == 1


class TestJsonFiles:
    def test_nothing_but_the_records_is_left_in_the_state_directory(self, tmp_path: Path) -> None:
        store = JsonFilePublicationStore(str(tmp_path / "state"))
        for i in range(20):
            store.put(publication(f"/t{i}"))
        assert sorted(p.suffix for p in (tmp_path / "state" / "publications").iterdir()) == [".json"] * 20

    def test_a_restarted_store_reads_what_the_last_one_wrote(self, tmp_path: Path) -> None:
        JsonFilePublicationStore(str(tmp_path / "state")).put(publication("/t"))
        assert JsonFilePublicationStore(str(tmp_path / "state")).get("/t") == publication("/t")
        assert JsonFilePublicationStore(str(tmp_path / "state"), kind="stagings").get("/t") is None

    def test_a_restarted_store_finds_the_publications_of_a_volume_from_the_records(self, tmp_path: Path) -> None:
        first = JsonFilePublicationStore(str(tmp_path / "state"))
        for target in ("/a", "/b", "/c"):
            first.put(publication(target, "vol-2" if target == "/c" else "vol-1"))
        (tmp_path / "state" / "publications" / ("0" * 64 + ".json")).write_bytes(b"{not json")
        again = JsonFilePublicationStore(str(tmp_path / "state"))
        assert [p.target for p in again.of_volume("vol-1")] == ["/a", "/b"]
        again.remove("/a")
        assert [p.target for p in again.of_volume("vol-1")] == ["/b"]

    def test_a_single_writer_mark_round_trips_and_is_left_out_when_unset(self, tmp_path: Path) -> None:
        store = JsonFilePublicationStore(str(tmp_path / "state"))
        store.put(Publication("vol-1", "/a", "s:/e", (), single_writer=True))
        store.put(publication("/b"))
        assert store.get("/a") == Publication("vol-1", "/a", "s:/e", (), single_writer=True)
        unmarked = tmp_path / "state" / "publications" / (hashlib.sha256(b"/b").hexdigest() + ".json")
        assert b"single_writer" not in unmarked.read_bytes()  # byte for byte what drivers before it wrote

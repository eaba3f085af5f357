"""Each PublicationStore under one contract: the fake the unit tests use, and the JSON files the node keeps."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest

from adapters.state.publications import JsonFilePublicationStore
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

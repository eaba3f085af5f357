"""Delete touches only the volume's own directory; archive renames it within the share; parents are never removed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from adapters.csi.v1 import csi_pb2 as csi
from domain.model import METADATA_DIR
from tests.fault.conftest import SERVER, FaultDriver, Lab, create_request

pytestmark = pytest.mark.integration


def snapshot(root: Path) -> dict[str, str]:
    """What lies below root, but the driver's own METADATA_DIR (its volume index)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if rel.split("/")[0] == METADATA_DIR:
            continue
        out[rel] = "link" if path.is_symlink() else "dir" if path.is_dir() else path.read_text()
    return out


@pytest.fixture
def driver(lab: Lab) -> FaultDriver:
    return lab.start(mode="controller")


@pytest.fixture
def outside(lab: Lab) -> Path:
    """Data beside the share on the same server: no delete may reach it."""
    victim = lab.root / SERVER / "victim"
    victim.mkdir()
    (victim / "data").write_text("keep")
    return victim


def plant_neighbours(export: Path, outside: Path) -> None:
    (export / "team" / "pvc-1-other").mkdir(parents=True, exist_ok=True)
    (export / "team" / "pvc-1-other" / "data").write_text("a sibling sharing the prefix")
    (export / "team" / "notes.txt").write_text("a file beside the volume")
    volume = export / "team" / "pvc-1"
    (volume / "nested" / "deeper").mkdir(parents=True)
    (volume / "nested" / "deeper" / "file").write_text("the volume's own data")
    (volume / "escape").symlink_to(outside)


class TestDeleteScope:
    def test_delete_removes_the_volume_directory_and_its_record_and_nothing_else(
        self, driver: FaultDriver, lab: Lab, outside: Path
    ) -> None:
        volume = driver.controller.CreateVolume(create_request("pvc-1", subDir="team/pvc-1"), timeout=10).volume
        plant_neighbours(lab.export, outside)
        outside_before = snapshot(outside)
        driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=volume.volume_id), timeout=10)
        driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=volume.volume_id), timeout=10)
        assert snapshot(lab.export) == {
            "team": "dir",  # the parent stays, though the driver made it
            "team/notes.txt": "a file beside the volume",
            "team/pvc-1-other": "dir",
            "team/pvc-1-other/data": "a sibling sharing the prefix",
        }
        assert snapshot(outside) == outside_before  # the link inside the volume was removed, not followed

    def test_an_emptied_parent_the_driver_made_is_left_in_place(self, driver: FaultDriver, lab: Lab) -> None:
        volume = driver.controller.CreateVolume(create_request("pvc-1", subDir="a/b/pvc-1"), timeout=10).volume
        driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=volume.volume_id), timeout=10)
        assert snapshot(lab.export) == {"a": "dir", "a/b": "dir"}
        assert os.listdir(lab.export / METADATA_DIR / "volumes") == []  # its index entry went with its record

    def test_archive_renames_the_directory_beside_itself_within_the_share(
        self, driver: FaultDriver, lab: Lab, outside: Path
    ) -> None:
        request = create_request("pvc-1", subDir="team/pvc-1", onDelete="archive")
        volume = driver.controller.CreateVolume(request, timeout=10).volume
        plant_neighbours(lab.export, outside)
        driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=volume.volume_id), timeout=10)
        archived = [name for name in os.listdir(lab.export / "team") if name.startswith("archived-pvc-1-")]
        assert len(archived) == 1
        assert (lab.export / "team" / archived[0] / "nested" / "deeper" / "file").read_text() == "the volume's own data"
        assert not (lab.export / "team" / "pvc-1").exists() and not (lab.export / "team" / ".pvc-1.nfs-csi.json").exists()
        assert sorted(os.listdir(lab.export)) == [METADATA_DIR, "team"] and sorted(os.listdir(lab.root / SERVER)) == ["exports", "victim"]
        # a volume of the same name, archived again within the same second, does not replace the first archive
        driver.controller.CreateVolume(request, timeout=10)
        driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=volume.volume_id), timeout=10)
        assert len([n for n in os.listdir(lab.export / "team") if n.startswith("archived-pvc-1-")]) == 2

    @pytest.mark.parametrize(
        "crafted",
        [
            "nfs1#127.0.0.1#/exports#../victim#delete",
            "nfs1#127.0.0.1#/exports#%2E%2E/victim#delete",
            "nfs1#127.0.0.1#/#victim#delete",
            "nfs1#127.0.0.1#/exports/../victim#data#delete",
            "nfs1#127.0.0.1#/exports#team#delete",
            "nfs1#127.0.0.1#/exports#team/pvc-1-other#delete",
        ],
    )
    def test_a_crafted_id_deletes_nothing(self, driver: FaultDriver, lab: Lab, outside: Path, crafted: str) -> None:
        driver.controller.CreateVolume(create_request("pvc-1", subDir="team/pvc-1"), timeout=10)
        plant_neighbours(lab.export, outside)
        before = snapshot(lab.root)
        driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=crafted), timeout=10)
        assert snapshot(lab.root) == before

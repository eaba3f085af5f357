"""The committed generated code matches adapters/csi/v1/csi.proto, and secrets are marked."""

from __future__ import annotations

import shutil
from pathlib import Path

from grpc_tools import protoc

from adapters.csi.v1 import csi_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTO = "adapters/csi/v1/csi.proto"
GENERATED = ("csi_pb2.py", "csi_pb2.pyi", "csi_pb2_grpc.py")


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    (tmp_path / "adapters/csi/v1").mkdir(parents=True)
    shutil.copy(ROOT / PROTO, tmp_path / PROTO)
    include = str(Path(protoc.__file__).parent / "_proto")
    argv = ["protoc", f"-I{tmp_path}", f"-I{include}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}", str(tmp_path / PROTO)]
    assert protoc.main(argv) == 0
    stale = [name for name in GENERATED
             if (tmp_path / "adapters/csi/v1" / name).read_text() != (ROOT / "adapters/csi/v1" / name).read_text()]
    assert stale == [], f"regenerate with scripts/gen-proto: {stale} differ from {PROTO}"


def test_every_secrets_field_carries_csi_secret() -> None:
    unmarked = [
        f"{message.full_name}.{field.name}"
        for message in csi_pb2.DESCRIPTOR.message_types_by_name.values()
        for field in message.fields
        if "secret" in field.name and not field.GetOptions().Extensions[csi_pb2.csi_secret]
    ]
    assert unmarked == []
    assert csi_pb2.CreateVolumeRequest.DESCRIPTOR.fields_by_name["secrets"].GetOptions().Extensions[csi_pb2.csi_secret]


def test_the_services_of_spec_v1_12_are_all_there() -> None:
    services = csi_pb2.DESCRIPTOR.services_by_name
    assert {"Identity", "Controller", "Node", "GroupController", "SnapshotMetadata"} <= set(services)
    assert "ControllerModifyVolume" in services["Controller"].methods_by_name
    assert csi_pb2.DESCRIPTOR.package == "csi.v1"

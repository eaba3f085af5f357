"""JsonFilePublicationStore: one small JSON file per published target, in a node-local state directory."""

from __future__ import annotations

import hashlib
import os
import threading

from domain.model import Publication
from ports.publications import PublicationStore


class JsonFilePublicationStore(PublicationStore):
    def __init__(self, state_dir: str) -> None:
        self._dir = os.path.join(os.path.abspath(state_dir), "publications")

    def _path(self, target: str) -> str:
        return os.path.join(self._dir, hashlib.sha256(target.encode()).hexdigest() + ".json")

    def get(self, target: str) -> Publication | None:
        try:
            with open(self._path(target), "rb") as handle:
                publication = Publication.from_json(handle.read())
        except FileNotFoundError:
            return None
        return publication if publication.target == target else None

    def put(self, publication: Publication) -> None:
        os.makedirs(self._dir, mode=0o700, exist_ok=True)
        path = self._path(publication.target)
        temporary = f"{path}.tmp{os.getpid()}.{threading.get_ident()}"
        with open(temporary, "wb") as handle:
            handle.write(publication.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)

    def remove(self, target: str) -> None:
        try:
            os.unlink(self._path(target))
        except FileNotFoundError:
            pass

    def count(self) -> int:
        try:
            return sum(1 for name in os.listdir(self._dir) if name.endswith(".json"))
        except FileNotFoundError:
            return 0

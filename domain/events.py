"""Domain events: what the use cases report happened, for metrics; the domain never knows who listens."""

from __future__ import annotations

import enum


class Event(str, enum.Enum):
    VOLUME_CREATED = "volume_created"
    VOLUME_ADOPTED = "volume_adopted"
    VOLUME_DELETED = "volume_deleted"
    VOLUME_ARCHIVED = "volume_archived"
    VOLUME_RETAINED = "volume_retained"
    VOLUME_PUBLISHED = "volume_published"
    VOLUME_UNPUBLISHED = "volume_unpublished"
    STALE_HANDLE_RECOVERED = "stale_handle_recovered"
    SNAPSHOT_CREATED = "snapshot_created"
    SNAPSHOT_DELETED = "snapshot_deleted"

"""The JSON log formatter bounds every value it writes, and says how long a cut value was."""

from __future__ import annotations

import json
import logging
import sys

from app.logs import MAX_ENTRIES, MAX_TRACEBACK_CHARS, MAX_VALUE_CHARS, JsonFormatter

MEGABYTE = "x" * (1 << 20)


def line(msg: str, *args: object, exc: bool = False, **extra: object) -> tuple[str, dict[str, object]]:
    record = logging.LogRecord("csi", logging.WARNING, __file__, 1, msg, args, sys.exc_info() if exc else None)
    record.__dict__.update(extra)
    text = JsonFormatter().format(record)
    return text, json.loads(text)


class TestBoundedValues:
    def test_a_megabyte_argument_extra_field_or_nested_value_is_cut_and_its_length_shown(self) -> None:
        text, entry = line(
            "volume %s is refused", MEGABYTE, volume_id=MEGABYTE, request={"volume_context": {"k": MEGABYTE}, "flags": [MEGABYTE]}
        )
        assert len(text) < 8 * MAX_VALUE_CHARS
        shown = f"{'x' * MAX_VALUE_CHARS}…[truncated, {1 << 20} chars in all]"
        assert entry["msg"] == f"volume {shown} is refused"
        assert entry["volume_id"] == shown
        assert entry["request"] == {"volume_context": {"k": shown}, "flags": [shown]}

    def test_a_map_or_list_with_very_many_entries_shows_the_first_and_counts_the_rest(self) -> None:
        many = {f"key-{n}": "v" for n in range(5000)}
        text, entry = line("call", parameters=many, flags=list(many))
        assert len(text) < 4 * MAX_VALUE_CHARS
        assert len(entry["parameters"]) == MAX_ENTRIES + 1 and entry["parameters"]["…"] == f"{5000 - MAX_ENTRIES} more entries"  # type: ignore[index,arg-type]
        assert entry["flags"][-1] == f"…{5000 - MAX_ENTRIES} more items"  # type: ignore[index]

    def test_a_traceback_is_kept_to_its_own_larger_bound(self) -> None:
        try:
            raise ValueError(MEGABYTE)
        except ValueError:
            text, entry = line("failed", exc=True)
        assert len(text) < 2 * MAX_TRACEBACK_CHARS and "Traceback" in str(entry["error"]) and "chars in all]" in str(entry["error"])

    def test_ordinary_values_are_written_as_they_are(self) -> None:
        _, entry = line("%s %s took %d ms", "CreateVolume", "OK", 12, volume_id="nfs1#h#/e#pvc-1#delete", request={"name": "pvc-1"})
        assert entry["msg"] == "CreateVolume OK took 12 ms"
        assert entry["volume_id"] == "nfs1#h#/e#pvc-1#delete" and entry["request"] == {"name": "pvc-1"}

"""Mutate CSI request messages at random, field by field through their descriptors, or byte by byte on the wire."""

from __future__ import annotations

import random
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

# Strings a hostile or confused caller might send: traversal, injection, encodings, limits, invisible characters.
HOSTILE = [
    "", " ", ".", "..", "../..", "../../etc", "/", "/abs", "a/../../b", "a/./b", "%2e%2e", "%2e%2e%2f", "%00",
    "..%2f..%2f", "a\x00b", "\x00", "a\\b", "..\\..\\", "\u2024\u2024", "\uff0e\uff0e", "\u2025", "a\u200bb",
    "a\u202eb", "a\nb", "a,b", "-o", "--bind", "a b", "ro,exec", "bind", "x-systemd.automount", "nfs1#", "#",
    "nfs1#127.0.0.1#/exports#..#delete", "nfs1#127.0.0.1#/exports#%2E%2E#delete", "nfs1#-o#/exports#x#delete",
    "nfs1#127.0.0.1#/exports#x#shred", "nfs1#127.0.0.1##x#delete", "${pvc.metadata.name}", "${", "${x}",
    "${pvc.metadata.namespace}/../..", "x" * 4096, "é" * 200, "\U0001f4a9", "\x7f", "0", "-1",
    "99999999999999999999", "7777", "0o777", "true", "True", "TRUE", "/proc", "/etc", "/tmp", "/dev/shm", "/sys",
    "/-rf", "//", "///exports", "/exports/../..", "127.0.0.1:/exports", "[::1]", "[", "nfs.example.com.",
]  # fmt: skip
_ALPHABET = "/.\\%#,:;$ {}-_\x00\n\t\u200b\uff0eaZ9é"
_INTS = [0, 1, -1, 2, 1 << 20, 1 << 30, 1 << 62, (1 << 63) - 1, -(1 << 63)]

# Characters a validator must not let through at either end of a value: Python's '$' matches before a final "\n"
# (so it comes up most), and strip() quietly removes most of the others.
EDGES = ["\n", "\n", "\n", "\r\n", "\r", "\t", "\x00", "\x0b", "\x1b", "\x7f", " ", "\x85", "\u2028", "\ufeff", "\u200b"]
# Just over the CSI spec's limits (128 bytes a string, 4 KiB a map), over the larger ones a driver may document
# (ids, paths, contexts), and far over all of them. 1 MiB is rare: one is enough to show a value kept whole.
SIZES = [129, 256, 4097, 4097, 16385, 65537, 1 << 20]


def oversized(rng: random.Random, value: str, sizes: list[int] = SIZES) -> str:
    """value repeated (or a filler) to one of sizes characters."""
    size = rng.choice(sizes)
    unit = value or rng.choice(["x", "é", "/a", "%2e"])
    return (unit * (size // len(unit) + 1))[:size]


def at_edges(rng: random.Random, value: str) -> str:
    """value with a control or invisible character before it, after it, or both."""
    roll = rng.random()
    before = rng.choice(EDGES) if roll < 0.3 or roll >= 0.7 else ""
    after = rng.choice(EDGES) if roll >= 0.3 else ""
    return before + value + after


def mutate_string(rng: random.Random, value: str) -> str:
    roll = rng.random()
    if roll < 0.05:
        return oversized(rng, value)
    if roll < 0.17:
        return at_edges(rng, value)
    if roll < 0.40 or not value:
        return rng.choice(HOSTILE)
    if roll < 0.55:
        at = rng.randrange(len(value) + 1)
        return value[:at] + rng.choice(_ALPHABET) + value[at:]
    if roll < 0.65:
        at = rng.randrange(len(value))
        return value[:at] + value[at + 1 :]
    if roll < 0.75:
        return value + rng.choice(["/..", "/../x", "/", "x", "\x00", ",ro", "#delete", "%2f.."])
    if roll < 0.85:
        return rng.choice(["../", "/", "./", "-", "%2e%2e/"]) + value
    if roll < 0.92:
        return value * rng.randint(2, 40)
    return value[: rng.randrange(len(value))]


def _scalar(rng: random.Random, field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_STRING:
        return mutate_string(rng, value)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return not value
    if field.type == FieldDescriptor.TYPE_ENUM:
        return rng.randint(-3, 12)
    if field.type in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
        return rng.choice(_INTS)
    if field.type in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32):
        return rng.randint(-(1 << 31), (1 << 31) - 1)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 16)))
    return value


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def oversize_map(rng: random.Random, entries: Any) -> None:
    """Push a string map over the size limits: one huge value or key, or very many entries."""
    roll = rng.random()
    keys = list(entries.keys())
    if keys and roll < 0.4:
        key = rng.choice(keys)
        entries[key] = oversized(rng, entries[key])
    elif roll < 0.6:
        entries[oversized(rng, rng.choice(keys) if keys else "k")] = "v"
    else:
        for n in range(rng.choice([64, 300, 2000])):
            entries[f"csi.storage.k8s.io/fuzz-{n}"] = "v" * 16


def mutate_message(rng: random.Random, message: Message, depth: int = 0) -> None:
    """Change one field somewhere in message: a scalar, a map entry, a repeated item, or a sub-message."""
    fields = list(message.DESCRIPTOR.fields)
    if not fields:
        return
    field = rng.choice(fields)
    value = getattr(message, field.name)
    if _is_map(field):
        keys = list(value.keys())
        roll = rng.random()
        if keys and roll < 0.4:
            key = rng.choice(keys)
            value[key] = mutate_string(rng, value[key]) if isinstance(value[key], str) else value[key]
        elif keys and roll < 0.55:
            del value[rng.choice(keys)]
        elif keys and roll < 0.7:
            key = rng.choice(keys)
            item = value.pop(key)
            value[mutate_string(rng, key)] = item
        elif roll < 0.8:
            value[rng.choice(HOSTILE + ["server", "share", "subDir", "onDelete", "mountPermissions", "csi.storage.k8s.io/ephemeral"])] = rng.choice(HOSTILE)
        else:
            oversize_map(rng, value)
    elif field.is_repeated:
        if field.message_type is not None:
            roll = rng.random()
            if len(value) and roll < 0.5:
                mutate_message(rng, value[rng.randrange(len(value))], depth + 1)
            elif len(value) and roll < 0.7:
                value.add().CopyFrom(value[0])
            elif roll < 0.85:
                del value[:]
            else:
                value.add()
        else:
            roll = rng.random()
            if len(value) and roll < 0.5:
                at = rng.randrange(len(value))
                value[at] = _scalar(rng, field, value[at])
            elif roll < 0.8:
                value.append(_scalar(rng, field, field.default_value if field.type != FieldDescriptor.TYPE_STRING else ""))
            else:
                del value[:]
    elif field.message_type is not None:
        roll = rng.random()
        if message.HasField(field.name) and roll < 0.6 and depth < 4:
            mutate_message(rng, value, depth + 1)
        elif roll < 0.8:
            message.ClearField(field.name)
        else:
            value.SetInParent()
            if value.DESCRIPTOR.fields and depth < 4:
                mutate_message(rng, value, depth + 1)
    else:
        try:
            setattr(message, field.name, _scalar(rng, field, value))
        except (ValueError, TypeError):
            pass  # protobuf refused the value itself (an enum or a string it cannot encode): nothing is sent


def _text_fields(message: Message) -> list[tuple[Message, FieldDescriptor]]:
    """Every string or string map set in message, at any depth, with the message that holds it."""
    found: list[tuple[Message, FieldDescriptor]] = []
    for field, value in message.ListFields():
        if _is_map(field):
            if field.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_STRING:
                found.append((message, field))
        elif field.message_type is not None:
            for item in value if field.is_repeated else [value]:
                found += _text_fields(item)
        elif field.type == FieldDescriptor.TYPE_STRING:
            found.append((message, field))
    return found


def _change_one(rng: random.Random, message: Message, change: Any) -> None:
    fields = _text_fields(message)
    if not fields:
        return
    top = [(holder, field) for holder, field in fields if holder is message and not field.is_repeated]
    # half the time an id, a name or a path of the request itself: the fields every use case reads first
    holder, field = rng.choice(top if top and rng.random() < 0.5 else fields)
    value = getattr(holder, field.name)
    if _is_map(field):
        if value:
            key = rng.choice(list(value.keys()))
            value[key] = change(rng, value[key])
    elif field.is_repeated:
        if value:
            at = rng.randrange(len(value))
            value[at] = change(rng, value[at])
    else:
        setattr(holder, field.name, change(rng, value))


def oversize_one(rng: random.Random, message: Message) -> None:
    """Only one string of an otherwise valid request, or one value of a map, made far too long: what a size limit
    must catch before anything is written (a record too large to read back, a log line of megabytes)."""
    _change_one(rng, message, lambda g, value: oversized(g, value, [4097, 16385, 1 << 20, 1 << 20]))


def edge_one(rng: random.Random, message: Message) -> None:
    """Only one string of an otherwise valid request given a control character at an end: a validator using '$'
    or strip() lets exactly this through."""
    _change_one(rng, message, at_edges)


def mutate_bytes(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        roll = rng.random()
        if data and roll < 0.5:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif data and roll < 0.7:
            del data[rng.randrange(len(data)) :]
        else:
            at = rng.randint(0, len(data))
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(data)

"""Lexical path rules: every path built from a request stays inside its base."""

import posixpath
import re

from domain.errors import InvalidArgument

_FORBIDDEN_IN_PATH = re.compile(r"[\x00-\x1f\x7f,\s\\]")


def relative_subpath(value: str, what: str) -> str:
    """Normalise a relative path lexically; refuse anything that could leave its base."""
    if not value:
        raise InvalidArgument(f"{what} must not be empty")
    if _FORBIDDEN_IN_PATH.search(value):
        raise InvalidArgument(f"{what} {value!r} contains a control character, comma, backslash or whitespace")
    if value.startswith("/"):
        raise InvalidArgument(f"{what} {value!r} must be relative")
    parts = value.split("/")
    if any(part in ("..", ".") for part in parts):
        raise InvalidArgument(f"{what} {value!r} must not contain '.' or '..' components")
    normal = posixpath.normpath(value)
    if normal in ("", ".") or normal.startswith(("/", "..")):
        raise InvalidArgument(f"{what} {value!r} does not name a directory below its base")
    return normal


def absolute_path(value: str, what: str) -> str:
    """Normalise an absolute path lexically; refuse '..' and forbidden characters."""
    if not value:
        raise InvalidArgument(f"{what} must not be empty")
    if _FORBIDDEN_IN_PATH.search(value):
        raise InvalidArgument(f"{what} {value!r} contains a control character, comma, backslash or whitespace")
    if not value.startswith("/"):
        raise InvalidArgument(f"{what} {value!r} must be an absolute path")
    if ".." in value.split("/"):
        raise InvalidArgument(f"{what} {value!r} must not contain '..'")
    if value.startswith("/-"):
        raise InvalidArgument(f"{what} {value!r} must not start with '-'")
    return posixpath.normpath(value).replace("//", "/")


def join_inside(base: str, relative: str) -> str:
    """Join a validated relative path to base, and prove the result is strictly inside base."""
    base = posixpath.normpath(base)
    joined = posixpath.normpath(posixpath.join(base, relative))
    prefix = base if base.endswith("/") else base + "/"
    if not joined.startswith(prefix) or joined == base:
        raise InvalidArgument(f"path {relative!r} escapes its base {base!r}")
    return joined

"""Lexical path rules: every path built from a request stays inside its base."""

import posixpath
import re
import unicodedata

from domain.errors import InvalidArgument

_FORBIDDEN_IN_PATH = re.compile(r"[\x00-\x1f\x7f,\s\\]")
# Control, format (zero-width, bidi overrides), surrogate and separator characters: invisible or unencodable.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})

MAX_COMPONENT_BYTES = 200
"""A directory name made from a request; its record's name, ``.<name>.nfs-csi.json.tmp``, must fit in 255 bytes."""
MAX_SUBPATH_BYTES = 1024
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4095  # PATH_MAX less its NUL


def _utf8_length(value: str) -> int:
    return len(value.encode("utf-8", errors="surrogatepass"))


def check_characters(value: str, what: str) -> None:
    """Refuse control characters, commas, backslashes, whitespace and invisible or unencodable characters."""
    if _FORBIDDEN_IN_PATH.search(value) or any(unicodedata.category(c) in _FORBIDDEN_CATEGORIES for c in value):
        raise InvalidArgument(
            f"{what} {value!r} contains a control or invisible character, a comma, a backslash or whitespace"
        )


def relative_subpath(value: str, what: str, new: bool = True) -> str:
    """Normalise a relative path lexically; refuse anything that could leave its base.

    ``new``: the path is about to be created, so names starting with '.' are refused too (they could shadow the
    driver's records or a server's special directories); ids of existing volumes are read with ``new=False``.
    """
    if not value:
        raise InvalidArgument(f"{what} must not be empty")
    if _utf8_length(value) > MAX_SUBPATH_BYTES:
        raise InvalidArgument(f"{what} is longer than {MAX_SUBPATH_BYTES} bytes")
    check_characters(value, what)
    if value.startswith("/"):
        raise InvalidArgument(f"{what} {value!r} must be relative")
    parts = value.split("/")
    if any(part in ("..", ".") for part in parts):
        raise InvalidArgument(f"{what} {value!r} must not contain '.' or '..' components")
    for part in parts:
        if new and part.startswith("."):
            raise InvalidArgument(f"{what} {value!r}: a directory name must not start with '.' ({part!r})")
        if _utf8_length(part) > MAX_COMPONENT_BYTES:
            raise InvalidArgument(f"{what}: the directory name {part[:40]!r}... is longer than {MAX_COMPONENT_BYTES} bytes")
    normal = posixpath.normpath(value)
    if normal in ("", ".") or normal.startswith(("/", "..")):
        raise InvalidArgument(f"{what} {value!r} does not name a directory below its base")
    return normal


def absolute_path(value: str, what: str) -> str:
    """Normalise an absolute path lexically; refuse '..' and forbidden characters."""
    if not value:
        raise InvalidArgument(f"{what} must not be empty")
    if _utf8_length(value) > MAX_PATH_BYTES:
        raise InvalidArgument(f"{what} is longer than {MAX_PATH_BYTES} bytes")
    check_characters(value, what)
    if not value.startswith("/"):
        raise InvalidArgument(f"{what} {value!r} must be an absolute path")
    parts = value.split("/")
    if ".." in parts:
        raise InvalidArgument(f"{what} {value!r} must not contain '..'")
    if value.startswith("/-"):
        raise InvalidArgument(f"{what} {value!r} must not start with '-'")
    if any(_utf8_length(part) > MAX_NAME_BYTES for part in parts):
        raise InvalidArgument(f"{what} has a name longer than {MAX_NAME_BYTES} bytes")
    return posixpath.normpath(value).replace("//", "/")


def join_inside(base: str, relative: str) -> str:
    """Join a validated relative path to base, and prove the result is strictly inside base."""
    base = posixpath.normpath(base)
    joined = posixpath.normpath(posixpath.join(base, relative))
    prefix = base if base.endswith("/") else base + "/"
    if not joined.startswith(prefix) or joined == base:
        raise InvalidArgument(f"path {relative!r} escapes its base {base!r}")
    return joined

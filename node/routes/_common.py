"""Helpers shared by the route modules: strict query parameters and log selection.

Invariant: every parameter parser raises an :class:`~ledger.errors.InputError` (400)
naming the parameter; handlers never see a malformed value.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from aiohttp import web

from ledger.errors import EncodingError, InputError, TurtlesError
from ledger.reader import LogReader
from ledger.strictjson import no_duplicate_keys, refuse_float
from node.state import RUNTIME

_UINT = re.compile(r"0|[1-9][0-9]{0,18}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_INT = 2**63 - 1


class UnsupportedMediaError(InputError):
    """The request body's content type is not one the endpoint reads (HTTP 415)."""

    code = "unsupported_media_type"
    http_status = 415


def parse_uint(name: str, text: str) -> int:
    """A canonical non-negative decimal below 2**63, or InputError naming ``name``."""
    if not _UINT.fullmatch(text) or int(text) > MAX_INT:
        raise InputError(
            f"{name} must be a non-negative integer, got {text[:40]!r}", field=name
        )
    return int(text)


def query_uint(request: web.Request, name: str, default: int | None = None) -> int:
    """Query parameter ``name`` as a non-negative integer (InputError if absent without default)."""
    text = request.query.get(name)
    if text is None:
        if default is None:
            raise InputError(f"query parameter {name} is required", field=name)
        return default
    return parse_uint(name, text)


def parse_sha256(text: str) -> str:
    """A sha256 digest as 64 lowercase hex digits (``sha256:`` prefix and upper case accepted)."""
    digest = text.removeprefix("sha256:").lower()
    if not _SHA256.fullmatch(digest):
        raise InputError(f"not a sha256 digest (want 64 hex digits): {text[:80]!r}", field="sha256")
    return digest


def origin_hash(origin: str) -> str:
    """The path segment naming a mirrored log: hex SHA-256 of its origin."""
    return hashlib.sha256(origin.encode()).hexdigest()


def reader_for(request: web.Request) -> LogReader:
    """The log a read addresses: ``?origin=`` (own or mirrored), by default the own log.

    Raises:
        NotFoundError: the node holds no log of that origin.
        UnavailableError: the store is not open.
    """
    holdings = request.app[RUNTIME].open_holdings()
    origin = request.query.get("origin")
    if origin is None:
        return request.app[RUNTIME].own_log()
    return holdings.reader(origin)


def log_vkey(reader: LogReader) -> str:
    """The verifier key a log's checkpoints are signed with (from its stored meta)."""
    meta = reader.store.meta() or {}
    return str(meta.get("vkey", ""))


def parse_json(body: bytes) -> Any:
    """Strict JSON: UTF-8, no duplicate keys, no floats; EncodingError (400) otherwise."""

    try:
        return json.loads(body, object_pairs_hook=no_duplicate_keys, parse_float=refuse_float, parse_constant=refuse_float)
    except (ValueError, RecursionError) as e:
        raise EncodingError(f"body is not valid JSON: {str(e)[:200]}") from e


def json_error_item(e: TurtlesError) -> dict[str, Any]:
    """An error as one item of a list of per-element results."""
    return {"status": e.http_status, **e.to_dict()}


def media_type(request: web.Request) -> str:
    """The request's content type without parameters, lower case."""
    return request.content_type.lower()


JSON_TYPES = frozenset({"application/json"})
MSGPACK_TYPES = frozenset({"application/msgpack", "application/x-msgpack", "application/vnd.msgpack"})

__all__ = [
    "JSON_TYPES",
    "MSGPACK_TYPES",
    "UnsupportedMediaError",
    "json_error_item",
    "log_vkey",
    "media_type",
    "origin_hash",
    "parse_json",
    "parse_sha256",
    "parse_uint",
    "query_uint",
    "reader_for",
]

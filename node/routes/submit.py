"""Write endpoints: ``POST /v1/entries`` (one DSSE envelope) and ``POST /v1/entries:batch``.

A submission is authenticated by its own signatures; the node answers only once the
entry is durable, with the checkpoint covering it and the inclusion proof against it.

Replies: 201 appended; 409 duplicate (same body shape, the existing index: RELIABILITY
L4); 400 malformed; 403 bad signature or signer not admitted; 413 too large (refused
before the body is buffered); 415 wrong content type; 429 rate limit; 503 queue full
(both with Retry-After). The batch endpoint answers 200 with one result per envelope, in
order, each with its own status.
"""

from __future__ import annotations

import binascii
import json
from typing import Any

import msgpack
from aiohttp import web

from ledger.encoding import decode
from ledger.envelope import MAX_ENVELOPE_BYTES, MAX_SIGNATURES, Envelope, Signature
from ledger.errors import EncodingError, InputError, TooLargeError, TurtlesError
from node.limits import read_body
from node.routes._common import (
    JSON_TYPES,
    MSGPACK_TYPES,
    UnsupportedMediaError,
    media_type,
    parse_json,
)
from node.state import CONFIG, RUNTIME

routes = web.RouteTableDef()
_ACCEPTED = ", ".join(sorted(JSON_TYPES | MSGPACK_TYPES))


def _kind(request: web.Request) -> str:
    ctype = media_type(request)
    if ctype in JSON_TYPES:
        return "json"
    if ctype in MSGPACK_TYPES:
        return "msgpack"
    raise UnsupportedMediaError(
        f"content type {ctype or 'none'!r} is not accepted", hint=f"send one of {_ACCEPTED}"
    )


def parse_envelope(kind: str, body: bytes) -> Envelope:
    """One envelope from a request body (DSSE JSON or canonical msgpack)."""
    if not body:
        raise EncodingError("empty body: want a DSSE envelope")
    if kind == "json":
        return _common_envelope(body) or Envelope.from_json(body)
    return Envelope.from_msgpack(body)


_ENVELOPE_KEYS = frozenset({"payloadType", "payload", "signatures"})
_SIGNATURE_KEYS = frozenset({"keyid", "sig"})


def _common_envelope(body: bytes) -> Envelope | None:
    """``Envelope.from_json(body)`` for a body of the common shape, else None.

    A fast path (the C JSON parser without Python hooks, C base64) that accepts a subset
    of what :meth:`Envelope.from_json` accepts and builds the same envelope from it. The
    common shape: no backslash (so no escapes, and every ``"`` delimits a string), exactly
    the envelope's fields, every signature ``{"keyid", "sig"}``, base64 the canonical
    padded standard text of its bytes. Duplicate keys are ruled out by counting: a key
    that overwrote another would leave more strings in the text than in the parsed
    object, and with only strings in the object there is no float or constant anywhere.
    Anything else -- every invalid body included -- returns None, and the strict parser
    gives its answer and its error.
    """
    if len(body) > MAX_ENVELOPE_BYTES * 2 or b"\\" in body:
        return None
    try:
        doc = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if body.count(b'"') != 2 * _strings(doc):
        return None
    return _common_fields(doc)


def _strings(doc: Any) -> int:
    """How many strings an envelope of the common shape holds (keys and values); -1 if
    ``doc`` is not of that shape. Compared with the ``"`` in the text, it rules out a key
    that overwrote another."""
    if type(doc) is not dict or doc.keys() != _ENVELOPE_KEYS or type(doc["signatures"]) is not list:
        return -1
    return 5 + 4 * len(doc["signatures"])


def _common_fields(doc: Any) -> Envelope | None:
    """The envelope of a parsed document of the common shape (see :func:`_common_envelope`)."""
    if type(doc) is not dict or doc.keys() != _ENVELOPE_KEYS:
        return None
    ptype, payload_text, sigs = doc["payloadType"], doc["payload"], doc["signatures"]
    if type(ptype) is not str or not ptype or type(payload_text) is not str or type(sigs) is not list:
        return None
    if not 0 < len(sigs) <= MAX_SIGNATURES:
        return None
    signatures = []
    for s in sigs:
        if type(s) is not dict or s.keys() != _SIGNATURE_KEYS or type(s["keyid"]) is not str:
            return None
        sig = _canonical_b64(s["sig"])
        if sig is None:
            return None
        signatures.append(Signature(s["keyid"], sig))
    payload = _canonical_b64(payload_text)
    if payload is None:
        return None
    try:
        return Envelope(ptype, payload, tuple(signatures))
    except TurtlesError:  # a limit or a duplicate key id: the strict parser says which
        return None


def _common_batch(body: bytes, max_batch: int) -> list[Envelope | InputError] | None:
    """``parse_batch`` of a JSON body whose every envelope has the common shape, else None
    (the same fast path and the same quote count as :func:`_common_envelope`)."""
    if b"\\" in body:
        return None
    try:
        doc = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if type(doc) is not dict or doc.keys() != {"envelopes"} or type(doc["envelopes"]) is not list:
        return None
    items = doc["envelopes"]
    if not 0 < len(items) <= max_batch:
        return None  # the strict parser names the error
    counts = [_strings(item) for item in items]
    if min(counts) < 0 or body.count(b'"') != 2 * (1 + sum(counts)):
        return None
    out: list[Envelope | InputError] = []
    for item in items:
        env = _common_fields(item)
        if env is None:
            return None
        out.append(env)
    return out


_MSGPACK_ENVELOPE_KEYS = ["payload", "payloadType", "signatures"]  # canonical (byte) order
_MSGPACK_SIGNATURE_KEYS = ["keyid", "sig"]
_MAX_MSGPACK_STR = 4 * 256  # UTF-8 bytes of the longest key id or payload type an Envelope takes


def _common_msgpack_batch(body: bytes, max_batch: int) -> list[Envelope | InputError] | None:
    """``parse_batch`` of a msgpack body that is the canonical array of valid envelopes, else None.

    A fast path (the C msgpack decoder) that accepts a subset of what the strict decoder
    (:func:`ledger.encoding.decode`, then :meth:`Envelope.from_value` per element) accepts
    and builds the same envelopes from it: exactly the envelope's fields and types, keys in
    canonical order, and a body that re-encodes to the very bytes given (so shortest forms,
    no duplicate key, no float, no extension type, nothing trailing). Each envelope keeps
    its element's bytes as its :meth:`~ledger.envelope.Envelope.to_msgpack` (re-encoded
    element by element, they are its canonical form), so nobody packs it again. The limits bound what
    the C decoder may reserve before reading: no array longer than the batch limit or than
    :data:`MAX_SIGNATURES`, no map of more than three keys. Anything else -- every invalid
    body and every invalid element included -- returns None, and the strict path gives its
    answer and its errors.
    """
    n = len(body)
    try:
        items = msgpack.unpackb(body, raw=False, strict_map_key=True, max_str_len=_MAX_MSGPACK_STR,
                                max_bin_len=n, max_array_len=max(max_batch, MAX_SIGNATURES), max_map_len=3,
                                max_ext_len=0)
    except Exception:  # any decoding failure: the strict decoder names it
        return None
    if type(items) is not list or not 0 < len(items) <= max_batch:
        return None
    packer = msgpack.Packer(use_bin_type=True)
    head = packer.pack_array_header(len(items))
    if not body.startswith(head):
        return None
    at = len(head)
    out: list[Envelope | InputError] = []
    for item in items:
        if type(item) is not dict or list(item) != _MSGPACK_ENVELOPE_KEYS:
            return None
        ptype, payload, sigs = item["payloadType"], item["payload"], item["signatures"]
        if type(ptype) is not str or type(payload) is not bytes or type(sigs) is not list:
            return None
        if not 0 < len(sigs) <= MAX_SIGNATURES:
            return None
        signatures = []
        for s in sigs:
            if type(s) is not dict or list(s) != _MSGPACK_SIGNATURE_KEYS:
                return None
            keyid, sig = s["keyid"], s["sig"]
            if type(keyid) is not str or type(sig) is not bytes:
                return None
            signatures.append(Signature(keyid, sig))
        packed = packer.pack(item)
        if not body.startswith(packed, at):  # not the canonical form
            return None
        at += len(packed)
        try:
            env = Envelope(ptype, payload, tuple(signatures))
        except TurtlesError:  # a limit or a duplicate key id: the strict parser says which
            return None
        env.adopt_msgpack(packed)
        out.append(env)
    if at != n:  # something after the array
        return None
    return out


def _canonical_b64(text: object) -> bytes | None:
    """The bytes of canonical padded standard base64 ``text``, else None."""
    if type(text) is not str or not text.isascii():
        return None
    raw = text.encode("ascii")
    try:
        data = binascii.a2b_base64(raw, strict_mode=True)
    except binascii.Error:
        return None
    return data if binascii.b2a_base64(data, newline=False) == raw else None


def parse_batch(kind: str, body: bytes, max_batch: int) -> list[Envelope | InputError]:
    """The envelopes of a batch body: JSON ``{"envelopes": [...]}`` or a msgpack array.

    A malformed envelope becomes its error in the list (answered in its place), so one
    bad element does not sink the batch.

    Raises:
        TooLargeError: more than ``max_batch`` envelopes.
        InputError: the body itself is malformed.
    """
    if not body:
        raise EncodingError("empty body: want a batch of DSSE envelopes")
    common = _common_batch(body, max_batch) if kind == "json" else _common_msgpack_batch(body, max_batch)
    if common is not None:
        return common
    items: Any
    if kind == "json":
        doc = parse_json(body)
        if not isinstance(doc, dict) or set(doc) != {"envelopes"}:
            raise EncodingError('batch: want a JSON object {"envelopes": [...]}')
        items = doc["envelopes"]
    else:
        items = decode(body, max_size=len(body))
    if not isinstance(items, list) or not items:
        raise EncodingError("batch: want a non-empty list of envelopes")
    if len(items) > max_batch:
        raise TooLargeError(f"batch has {len(items)} envelopes, limit {max_batch}", limit=max_batch)
    out: list[Envelope | InputError] = []
    for item in items:
        try:
            out.append(Envelope.from_dict(item) if kind == "json" else Envelope.from_value(item))
        except InputError as e:
            out.append(e)
    return out


@routes.post("/v1/entries")
async def post_entry(request: web.Request) -> web.Response:
    """Append one DSSE envelope; 201 (or 409 duplicate) once durable."""
    kind = _kind(request)
    limits = request.app[CONFIG].limits
    envelope = parse_envelope(kind, await read_body(request, limits.max_body_bytes))
    accepted = await request.app[RUNTIME].open_submitter().submit(envelope)
    status = 409 if accepted.result.duplicate else 201
    # The bytes json_response would send, built without a generic encoder.
    return web.Response(body=accepted.to_json(), status=status, content_type="application/json", charset="utf-8")


@routes.post("/v1/entries:batch")
async def post_batch(request: web.Request) -> web.Response:
    """Append up to ``limits.max_batch`` envelopes; 200 with per-envelope results in order."""
    kind = _kind(request)
    limits = request.app[CONFIG].limits
    items = parse_batch(kind, await read_body(request, limits.max_batch_body_bytes), limits.max_batch)
    outcome = await request.app[RUNTIME].open_submitter().submit_many(items)
    return web.Response(body=outcome.to_json(), status=200, content_type="application/json", charset="utf-8")


__all__ = ["parse_batch", "parse_envelope", "routes"]

"""The OpenAPI 3.1 document of a node's HTTP API, written by hand next to the handlers.

Invariant: every route the app serves is documented here and every documented operation
is served (``tests/node/test_app_openapi.py`` checks both directions, and fuzzes the live
API against this document). Plug-ins add their paths through ``extra_paths``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from node.metrics import Registry

_HEX = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_UINT = {"type": "integer", "minimum": 0}
_ORIGIN = {
    "name": "origin", "in": "query", "required": False,
    "description": "Read a mirrored log of this origin instead of the own log.",
    "schema": {"type": "string"},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed request (the message names the parameter or field)",
        403: "Bad signature, or signer not admitted",
        404: "No such entry, log or resource",
        409: "Duplicate",
        413: "Body or batch too large (refused before buffering)",
        415: "Unsupported content type",
        429: "Rate limited (Retry-After)",
        503: "Overloaded or not ready (Retry-After)",
    }
    return {str(c): _json(_ref("Error"), text[c]) for c in codes}


def _param(name: str, where: str, schema: dict[str, Any], required: bool, description: str) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema, "description": description}


_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "description": "Stable machine-readable code"},
            "message": {"type": "string"}, "hint": {"type": "string"},
            "size": {**_UINT, "description": "Current tree size, when a size was out of range"},
            "retry_after": _UINT, "field": {"type": "string"}, "limit": _UINT,
        },
    },
    "LogInfo": {
        "type": "object", "required": ["origin", "vkey", "size", "root"],
        "properties": {"origin": {"type": "string"}, "vkey": {"type": "string"}, "size": _UINT, "root": _HEX},
    },
    "Envelope": {
        "type": "object", "required": ["payloadType", "payload", "signatures"],
        "description": "A DSSE envelope (payload and sig in base64).",
        "properties": {
            "payloadType": {"type": "string"},
            "payload": {"type": "string", "contentEncoding": "base64"},
            "signatures": {
                "type": "array", "minItems": 1,
                "items": {
                    "type": "object", "required": ["sig"],
                    "properties": {"keyid": {"type": "string"}, "sig": {"type": "string", "contentEncoding": "base64"}},
                },
            },
        },
    },
    "Appended": {
        "type": "object", "required": ["index", "leaf_hash", "checkpoint", "inclusion_proof", "size"],
        "properties": {
            "index": _UINT, "leaf_hash": _HEX, "size": _UINT,
            "checkpoint": {"type": "string", "description": "C2SP signed note covering the entry"},
            "inclusion_proof": {"type": "array", "items": _HEX, "description": "Against the checkpoint's size"},
        },
    },
    "Batch": {
        "type": "object", "required": ["envelopes"],
        "properties": {"envelopes": {"type": "array", "minItems": 1, "maxItems": 1000, "items": _ref("Envelope")}},
    },
    "BatchResult": {
        "type": "object", "required": ["checkpoint", "size", "results"],
        "properties": {
            "checkpoint": {"type": "string"}, "size": _UINT,
            "results": {
                "type": "array",
                "items": {
                    "type": "object", "required": ["status"],
                    "description": "201/409: index, leaf_hash, duplicate, inclusion_proof (against the "
                                   "batch checkpoint); otherwise error and message.",
                    "properties": {
                        "status": {"type": "integer"}, "index": _UINT, "leaf_hash": _HEX,
                        "duplicate": {"type": "boolean"}, "inclusion_proof": {"type": "array", "items": _HEX},
                        "error": {"type": "string"}, "message": {"type": "string"},
                    },
                },
            },
        },
    },
    "Entry": {
        "type": "object",
        "required": ["origin", "index", "ts", "leaf_hash", "prev", "entry", "envelope", "signers", "record"],
        "properties": {
            "origin": {"type": "string"}, "index": _UINT, "ts": {**_UINT, "description": "Unix ms"},
            "leaf_hash": _HEX, "prev": _HEX,
            "entry": {"type": "string", "contentEncoding": "base64", "description": "Exact leaf bytes"},
            "envelope": _ref("Envelope"),
            "signers": {"type": "array", "items": {"type": "string"}},
            "record": {"type": ["object", "null"], "description": "Decoded record: kind + fields"},
            "record_error": {"type": "string"},
        },
    },
    "EntryPage": {
        "type": "object", "required": ["origin", "start", "size", "entries", "next"],
        "properties": {
            "origin": {"type": "string"}, "start": _UINT, "size": _UINT,
            "entries": {"type": "array", "items": _ref("Entry")},
            "next": {"type": ["integer", "null"], "description": "start of the next page, null at the end"},
        },
    },
    "InclusionProof": {
        "type": "object", "required": ["index", "size", "leaf_hash", "proof", "root"],
        "properties": {
            "index": _UINT, "size": _UINT, "leaf_hash": _HEX, "proof": {"type": "array", "items": _HEX},
            "root": _HEX, "checkpoint": {"type": ["string", "null"]},
        },
    },
    "ConsistencyProof": {
        "type": "object", "required": ["from", "to", "proof", "root"],
        "properties": {
            "from": _UINT, "to": _UINT, "proof": {"type": "array", "items": _HEX}, "root": _HEX,
            "checkpoint": {"type": ["string", "null"]},
        },
    },
    "ArtefactHits": {
        "type": "object", "required": ["sha256", "attestations", "truncated"],
        "properties": {
            "sha256": _HEX, "truncated": {"type": "boolean"},
            "attestations": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "origin": {"type": "string"}, "index": _UINT, "ts": _UINT, "leaf_hash": _HEX,
                        "signers": {"type": "array", "items": {"type": "string"}}, "record": {"type": "object"},
                    },
                },
            },
        },
    },
    "ExplainRequest": {
        "type": "object", "required": ["subject", "purpose", "policy"],
        "properties": {
            "subject": {"type": "string", "description": "KEYID, org name or sha256:HEX"},
            "purpose": {"type": "string", "enum": ["release", "build", "log", "delegate"]},
            "policy": {"type": "string", "description": "The consumer policy file's TOML text"},
            "at": {"type": ["integer", "string"], "description": "Unix ms or RFC 3339 (default: now)"},
        },
    },
    "Health": {
        "type": "object", "required": ["status"],
        "properties": {"status": {"type": "string"}, "origin": {"type": "string"}, "size": _UINT},
    },
}

_NOTE = {"text/plain": {"schema": {"type": "string"}}}
_TILE = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
_TILE_PATH = _param("path", "path", {"type": "string"}, True,
                    "<L>/<N>[.p/<W>] or entries/<N>[.p/<W>] (C2SP tlog-tiles)")
_LOG_HASH = _param("log", "path", {"type": "string"}, True, "Hex SHA-256 of the log's origin")


def _paths() -> dict[str, Any]:
    return {
        "/checkpoint": {"get": {
            "operationId": "getCheckpoint", "summary": "Own log's latest checkpoint (C2SP signed note + cosignatures)",
            "responses": {"200": {"description": "Signed note", "content": _NOTE}, **_errors(503)},
        }},
        "/v1/log": {"get": {
            "operationId": "getLog", "summary": "Origin, verifier key, size and root of a log",
            "parameters": [_ORIGIN],
            "responses": {"200": _json(_ref("LogInfo"), "Log"), **_errors(404, 429, 503)},
        }},
        "/v1/entries": {
            "get": {
                "operationId": "getEntries", "summary": "A page of entries",
                "parameters": [
                    _param("start", "query", _UINT, False, "First index (default 0)"),
                    _param("limit", "query", {"type": "integer", "minimum": 1}, False, "At most 1000 (default 100)"),
                    _ORIGIN,
                ],
                "responses": {"200": _json(_ref("EntryPage"), "Entries"), **_errors(400, 404, 429, 503)},
            },
            "post": {
                "operationId": "postEntry", "summary": "Append one DSSE envelope; answers once durable",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("Envelope")},
                    "application/msgpack": {"schema": {"type": "string", "format": "binary"}},
                }},
                "responses": {
                    "201": _json(_ref("Appended"), "Appended"),
                    "409": _json(_ref("Appended"), "Duplicate: the existing entry"),
                    **_errors(400, 403, 413, 415, 429, 503),
                },
            },
        },
        "/v1/entries:batch": {"post": {
            "operationId": "postBatch", "summary": "Append up to max_batch envelopes, results in order",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("Batch")},
                "application/msgpack": {"schema": {"type": "string", "format": "binary"}},
            }},
            "responses": {"200": _json(_ref("BatchResult"), "Per-envelope results"), **_errors(400, 413, 415, 429, 503)},
        }},
        "/v1/entries/{index}": {"get": {
            "operationId": "getEntry", "summary": "One entry with its decoded record",
            "parameters": [_param("index", "path", _UINT, True, "Entry index"), _ORIGIN],
            "responses": {"200": _json(_ref("Entry"), "Entry"), **_errors(400, 404, 429, 503)},
        }},
        "/v1/proofs/inclusion": {"get": {
            "operationId": "getInclusionProof", "summary": "Inclusion proof of entry index in the tree of size",
            "parameters": [
                _param("index", "query", _UINT, True, "Entry index"),
                _param("size", "query", _UINT, False, "Tree size (default: current)"), _ORIGIN,
            ],
            "responses": {"200": _json(_ref("InclusionProof"), "Proof"), **_errors(400, 404, 429, 503)},
        }},
        "/v1/proofs/consistency": {"get": {
            "operationId": "getConsistencyProof", "summary": "Consistency proof between two tree sizes",
            "parameters": [
                _param("from", "query", _UINT, True, "Older size"),
                _param("to", "query", _UINT, False, "Newer size (default: current)"), _ORIGIN,
            ],
            "responses": {"200": _json(_ref("ConsistencyProof"), "Proof"), **_errors(400, 404, 429, 503)},
        }},
        "/tile/{path}": {"get": {
            "operationId": "getTile", "summary": "Own log's hash tile or entry bundle (C2SP tlog-tiles)",
            "parameters": [_TILE_PATH],
            "responses": {"200": {"description": "Tile data", "content": _TILE}, **_errors(400, 404, 429, 503)},
        }},
        "/mirror/{log}/tile/{path}": {"get": {
            "operationId": "getMirrorTile", "summary": "A held log's tile, by the hash of its origin",
            "parameters": [_LOG_HASH, _TILE_PATH],
            "responses": {"200": {"description": "Tile data", "content": _TILE}, **_errors(400, 404, 429, 503)},
        }},
        "/mirror/{log}/checkpoint": {"get": {
            "operationId": "getMirrorCheckpoint", "summary": "Latest checkpoint held for a log",
            "parameters": [_LOG_HASH],
            "responses": {"200": {"description": "Signed note", "content": _NOTE}, **_errors(404, 429, 503)},
        }},
        "/v1/artefacts/{sha256}": {"get": {
            "operationId": "getArtefact", "summary": "Attestations naming an artefact, in every log held",
            "parameters": [_param("sha256", "path", {"type": "string"}, True, "Hex digest (sha256: prefix allowed)")],
            "responses": {"200": _json(_ref("ArtefactHits"), "Attestations"), **_errors(400, 429, 503)},
        }},
        "/v1/trust/explain": {"post": {
            "operationId": "explainTrust", "summary": "Is a subject trusted for a purpose under a policy, and why",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ExplainRequest")}}},
            "responses": {"200": _json({"type": "object"}, "Explanation"), **_errors(400, 413, 415, 429, 503)},
        }},
        "/v1/trust/impact": {"get": {
            "operationId": "trustImpact", "summary": "What would lose trust if a key were revoked",
            "parameters": [
                _param("key", "query", {"type": "string"}, True, "Key id"),
                _param("at", "query", {"type": "string"}, False, "Unix ms or RFC 3339 (default: now)"),
                _param("since", "query", {"type": "string"}, False, "Revocation time (default: entirely)"),
                _param("purpose", "query", {"type": "string"}, False, "Purpose trust is judged for"),
            ],
            "responses": {"200": _json({"type": "object"}, "Impact"), **_errors(400, 429, 503)},
        }},
        "/v1/equivocations": {"get": {
            "operationId": "getEquivocations", "summary": "Evidence of equivocating logs",
            "responses": {"200": _json({"type": "array", "items": {"type": "object"}}, "Evidence"), **_errors(429)},
        }},
        "/metrics": {"get": {
            "operationId": "getMetrics", "summary": "Prometheus metrics",
            "responses": {"200": {"description": "Text exposition format", "content": {
                Registry.CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}}}},
        }},
        "/healthz": {"get": {
            "operationId": "getHealth", "summary": "200 when the log is open and the store healthy",
            "responses": {"200": _json(_ref("Health"), "Healthy"), "503": _json(_ref("Health"), "Unhealthy")},
        }},
        "/openapi.json": {"get": {
            "operationId": "getOpenAPI", "summary": "This document",
            "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1 document")},
        }},
    }


def openapi_document(extra_paths: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh copy the caller may change)."""
    paths = _paths()
    for path, ops in (extra_paths or {}).items():
        paths.setdefault(path, {}).update(copy.deepcopy(dict(ops)))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "turtles node",
            "version": "1",
            "description": "A turtles node: an append-only Merkle log of DSSE-signed supply-chain "
                           "records, with proofs, C2SP checkpoints and tiles, and trust queries.",
        },
        "paths": paths,
        "components": {"schemas": copy.deepcopy(_SCHEMAS)},
    }


__all__ = ["openapi_document"]

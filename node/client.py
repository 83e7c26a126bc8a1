"""Clients of a node's HTTP API: :class:`NodeClient` (sync, stdlib only, for the CLI) and
:class:`AsyncNodeClient` (aiohttp, for node-to-node replication and witnessing).

Invariants (RELIABILITY P5):
* Every call has connect and read timeouts and a byte cap on the response; a peer that
  stalls, trickles or sends endless data yields a clear :class:`~ledger.errors.UnavailableError`,
  never unbounded buffering.
* An error reply of the node (JSON ``{"error", "message"}``) is raised as the ledger error
  class of that code (``NotAdmittedError``, ``OverloadedError`` ...) with the HTTP status and
  the reply's evidence (``size``, ``retry_after``) as attributes.
* With ``ca`` set, HTTPS peers are verified against that CA bundle only.
* A submission answer is checked before it is returned: its inclusion proof must lead to
  the root of the checkpoint it came with (and, given ``vkey``, the checkpoint must carry
  the log's signature).
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from ledger import errors
from ledger.checkpoint import Checkpoint, open_note, split_note
from ledger.encoding import encode
from ledger.envelope import Envelope
from ledger.errors import EncodingError, TurtlesError, UnavailableError
from ledger.merkle import verify_inclusion

MiB = 1 << 20
MAX_NOTE_BYTES = 1 * MiB
MAX_JSON_BYTES = 64 * MiB
_CHUNK = 64 * 1024
_STANDARD_INIT = errors.TurtlesError.__init__
_BY_CODE: dict[str, type[TurtlesError]] = {
    cls.code: cls
    for cls in (getattr(errors, name) for name in errors.__all__)
    if isinstance(cls, type) and issubclass(cls, TurtlesError) and cls.__init__ is _STANDARD_INIT
}


@dataclass(frozen=True)
class Reply:
    """A raw HTTP reply: status, content type (no parameters) and the (capped) body."""

    status: int
    content_type: str
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        """The body as JSON (UnavailableError if it is not)."""
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError) as e:
            raise UnavailableError(f"node sent a reply that is not JSON (status {self.status})") from e


def remote_error(reply: Reply, url: str) -> TurtlesError:
    """The ledger error an error reply of a node stands for."""
    body: Any = None
    if reply.content_type == "application/json":
        try:
            body = json.loads(reply.body)
        except (ValueError, RecursionError):
            body = None
    if not isinstance(body, dict) or not isinstance(body.get("message"), str):
        text = reply.body[:200].decode("utf-8", "replace").strip()
        cls: type[TurtlesError] = UnavailableError if reply.status >= 500 else errors.InputError
        return cls(f"{url}: HTTP {reply.status} {text}".rstrip(), status=reply.status)
    code = str(body.get("error", ""))
    cls = _BY_CODE.get(code, UnavailableError if reply.status >= 500 else errors.InputError)
    hint = body.get("hint") if isinstance(body.get("hint"), str) else None
    evidence = {k: body[k] for k in ("retry_after", "field", "limit") if k in body}
    if "size" in body:
        evidence["current_size"] = body["size"]
    return cls(str(body["message"]), hint=hint, status=reply.status, remote_code=code, **evidence)


def check_appended(result: Mapping[str, Any], *, vkey: str | None = None) -> None:
    """Check a submission answer: proof of ``leaf_hash`` at ``index`` against the checkpoint.

    Raises:
        ProofError, NoteError: the answer does not prove what it claims.
    """
    note = str(result["checkpoint"])
    text = open_note(note, vkey) if vkey else split_note(note)[0]
    cp = Checkpoint.parse(text)
    proof = [bytes.fromhex(h) for h in result["inclusion_proof"]]
    verify_inclusion(bytes.fromhex(result["leaf_hash"]), int(result["index"]), cp.size, proof, cp.root)


def _ssl_context(ca: str | Path | None) -> ssl.SSLContext | None:
    return ssl.create_default_context(cafile=str(ca)) if ca else None


def _query(params: Mapping[str, object | None]) -> str:
    items = {k: str(v) for k, v in params.items() if v is not None}
    return "?" + urllib.parse.urlencode(items) if items else ""


class NodeClient:
    """A small synchronous client of one node (stdlib ``urllib``, so the CLI starts fast)."""

    def __init__(
        self, url: str, *, timeout: float = 30.0, ca: str | Path | None = None,
        vkey: str | None = None, max_bytes: int = MAX_JSON_BYTES,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.vkey = vkey
        self.max_bytes = max_bytes
        self._ssl = _ssl_context(ca)

    def request(
        self, method: str, path: str, *, body: bytes | None = None,
        content_type: str | None = None, max_bytes: int | None = None,
    ) -> Reply:
        """One HTTP exchange; any status is returned (UnavailableError if none arrives)."""
        url = self.url + path
        req = urllib.request.Request(url, data=body, method=method)
        if content_type:
            req.add_header("Content-Type", content_type)
        cap = self.max_bytes if max_bytes is None else max_bytes
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._ssl) as resp:
                return self._reply(resp.status, resp.headers, resp, cap, url)
        except urllib.error.HTTPError as e:
            with e:
                return self._reply(e.code, e.headers, e, cap, url)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            reason = getattr(e, "reason", e)
            raise UnavailableError(f"cannot reach {url}: {reason}", url=url) from e

    @staticmethod
    def _reply(status: int, headers: Any, stream: Any, cap: int, url: str) -> Reply:
        data = stream.read(cap + 1)
        if len(data) > cap:
            raise UnavailableError(f"{url}: reply is larger than {cap} bytes", url=url)
        ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        return Reply(status, ctype, data, dict(headers.items()))

    def _json(self, method: str, path: str, body: bytes | None = None, ctype: str | None = None) -> Any:
        reply = self.request(method, path, body=body, content_type=ctype)
        if reply.status >= 400:
            raise remote_error(reply, self.url + path)
        return reply.json()

    def submit(self, envelope: Envelope, *, verify: bool = True) -> dict[str, Any]:
        """Append an envelope; the answer (also for a duplicate) with ``duplicate`` set."""
        reply = self.request("POST", "/v1/entries", body=envelope.to_json(), content_type="application/json")
        if reply.status not in (201, 409) or reply.content_type != "application/json":
            raise remote_error(reply, self.url + "/v1/entries")
        result: dict[str, Any] = reply.json()
        if reply.status == 409 and "index" not in result:
            raise remote_error(reply, self.url + "/v1/entries")
        result["duplicate"] = reply.status == 409
        if verify:
            check_appended(result, vkey=self.vkey)
        return result

    def submit_batch(self, envelopes: Sequence[Envelope]) -> dict[str, Any]:
        """Append many envelopes; per-envelope results in order (``POST /v1/entries:batch``).

        The body is the canonical msgpack array of the envelopes' binary forms (the bulk
        body: no base64, and the node parses it with one C call); the answer is JSON. A batch
        holding a string msgpack cannot carry (a lone surrogate read from JSON) goes as JSON,
        so that the node, not this client, answers for it.
        """
        try:
            body, ctype = encode([e.to_value() for e in envelopes]), "application/msgpack"
        except EncodingError:
            body, ctype = json.dumps({"envelopes": [e.to_dict() for e in envelopes]}).encode(), "application/json"
        result: dict[str, Any] = self._json("POST", "/v1/entries:batch", body, ctype)
        return result

    def log_info(self, origin: str | None = None) -> dict[str, Any]:
        """``{"origin", "vkey", "size", "root"}``."""
        result: dict[str, Any] = self._json("GET", "/v1/log" + _query({"origin": origin}))
        return result

    def checkpoint(self) -> str:
        """The node's checkpoint (signed note text, with cosignatures)."""
        reply = self.request("GET", "/checkpoint", max_bytes=MAX_NOTE_BYTES)
        if reply.status != 200:
            raise remote_error(reply, self.url + "/checkpoint")
        return reply.body.decode("utf-8", "replace")

    def entry(self, index: int, *, origin: str | None = None) -> dict[str, Any]:
        """Entry ``index`` with its decoded record."""
        result: dict[str, Any] = self._json("GET", f"/v1/entries/{index}" + _query({"origin": origin}))
        return result

    def entries(self, start: int = 0, limit: int = 100, *, origin: str | None = None) -> dict[str, Any]:
        """A page of entries."""
        result: dict[str, Any] = self._json(
            "GET", "/v1/entries" + _query({"start": start, "limit": limit, "origin": origin})
        )
        return result

    def inclusion_proof(self, index: int, size: int | None = None, *, origin: str | None = None) -> dict[str, Any]:
        """``{"proof", "root", ...}`` for entry ``index`` in the tree of ``size``."""
        result: dict[str, Any] = self._json(
            "GET", "/v1/proofs/inclusion" + _query({"index": index, "size": size, "origin": origin})
        )
        return result

    def consistency_proof(self, first: int, second: int | None = None, *, origin: str | None = None) -> dict[str, Any]:
        """``{"proof", "root", ...}`` from tree size ``first`` to ``second``."""
        result: dict[str, Any] = self._json(
            "GET", "/v1/proofs/consistency" + _query({"from": first, "to": second, "origin": origin})
        )
        return result

    def artefact(self, sha256: str) -> dict[str, Any]:
        """Attestations naming the artefact in every log the node holds."""
        result: dict[str, Any] = self._json("GET", "/v1/artefacts/" + urllib.parse.quote(sha256, safe=":"))
        return result

    def explain(self, subject: str, *, purpose: str, policy: str, at: int | str | None = None) -> dict[str, Any]:
        """Explanation of whether ``subject`` is trusted for ``purpose`` under ``policy`` (TOML text)."""
        doc: dict[str, Any] = {"subject": subject, "purpose": purpose, "policy": policy}
        if at is not None:
            doc["at"] = at
        result: dict[str, Any] = self._json("POST", "/v1/trust/explain", json.dumps(doc).encode(), "application/json")
        return result

    def impact(
        self, key_id: str, *, at: int | str | None = None, since: int | str | None = None,
        purpose: str | None = None,
    ) -> dict[str, Any]:
        """What would lose trust if ``key_id`` were revoked."""
        q = _query({"key": key_id, "at": at, "since": since, "purpose": purpose})
        result: dict[str, Any] = self._json("GET", "/v1/trust/impact" + q)
        return result

    def equivocations(self) -> list[dict[str, Any]]:
        """Equivocation evidence the node holds."""
        result: list[dict[str, Any]] = self._json("GET", "/v1/equivocations")
        return result

    def health(self) -> dict[str, Any]:
        """``/healthz`` (raises UnavailableError when the node is unhealthy)."""
        result: dict[str, Any] = self._json("GET", "/healthz")
        return result


class AsyncNodeClient:
    """An aiohttp client of one peer node, for replication and witnessing.

    Use as ``async with AsyncNodeClient(url) as peer:`` or pass a shared ``session`` (then
    closing the client leaves the session open). Every method has a byte cap; ``timeout``
    bounds a whole exchange and ``read_timeout`` each socket read.
    """

    def __init__(
        self, url: str, *, session: aiohttp.ClientSession | None = None, timeout: float = 10.0,
        connect_timeout: float = 5.0, read_timeout: float | None = None, ca: str | Path | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._own_session = session is None
        self._session = session
        self._timeout = aiohttp.ClientTimeout(
            total=timeout, connect=connect_timeout, sock_read=read_timeout or timeout
        )
        self._ssl: ssl.SSLContext | bool = _ssl_context(ca) or True

    async def __aenter__(self) -> AsyncNodeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if this client created it."""
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def request(
        self, method: str, path: str, *, body: bytes | None = None, content_type: str | None = None,
        max_bytes: int = MAX_JSON_BYTES,
    ) -> Reply:
        """One exchange; any status is returned. UnavailableError on timeout, network
        failure or a body over ``max_bytes`` (read in chunks, never buffered beyond the cap)."""
        url = self.url + path
        headers = {"Content-Type": content_type} if content_type else {}
        try:
            async with self._get_session().request(
                method, url, data=body, headers=headers, timeout=self._timeout, ssl=self._ssl,
            ) as resp:
                declared = resp.content_length
                if declared is not None and declared > max_bytes:
                    raise UnavailableError(f"{url}: reply of {declared} bytes is over {max_bytes}", url=url)
                buf = bytearray()
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    buf += chunk
                    if len(buf) > max_bytes:
                        raise UnavailableError(f"{url}: reply is larger than {max_bytes} bytes", url=url)
                return Reply(resp.status, resp.content_type.lower(), bytes(buf), dict(resp.headers.items()))
        except TimeoutError as e:
            raise UnavailableError(f"{url}: timed out", url=url) from e
        except aiohttp.ClientError as e:
            raise UnavailableError(f"cannot reach {url}: {e}", url=url) from e

    async def _json(self, path: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
        reply = await self.request("GET", path, max_bytes=max_bytes)
        if reply.status != 200:
            raise remote_error(reply, self.url + path)
        return reply.json()

    async def get_checkpoint(self) -> str:
        """The peer's checkpoint note text (at most 1 MiB)."""
        reply = await self.request("GET", "/checkpoint", max_bytes=MAX_NOTE_BYTES)
        if reply.status != 200:
            raise remote_error(reply, self.url + "/checkpoint")
        try:
            return reply.body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UnavailableError(f"{self.url}/checkpoint is not UTF-8") from e

    async def get_log(self, origin: str | None = None) -> dict[str, Any]:
        """``{"origin", "vkey", "size", "root"}``."""
        result: dict[str, Any] = await self._json("/v1/log" + _query({"origin": origin}))
        return result

    async def get_entries(self, start: int, limit: int, *, origin: str | None = None) -> dict[str, Any]:
        """A page of entries (``entries[i]["entry"]`` is the base64 leaf; re-verify it!)."""
        result: dict[str, Any] = await self._json(
            "/v1/entries" + _query({"start": start, "limit": limit, "origin": origin})
        )
        return result

    async def get_consistency_proof(
        self, first: int, second: int, *, origin: str | None = None
    ) -> list[bytes]:
        """The consistency proof hashes from ``first`` to ``second`` (verify before use)."""
        doc = await self._json("/v1/proofs/consistency" + _query({"from": first, "to": second, "origin": origin}))
        try:
            return [bytes.fromhex(h) for h in doc["proof"]]
        except (KeyError, TypeError, ValueError) as e:
            raise UnavailableError(f"{self.url}: malformed consistency proof reply") from e

    async def get_tile(self, path: str, *, max_bytes: int = 2 * MiB) -> bytes:
        """A tile or entry bundle by its path (``tile/0/000``); verify with ledger.tiles."""
        reply = await self.request("GET", "/" + path.lstrip("/"), max_bytes=max_bytes)
        if reply.status != 200:
            raise remote_error(reply, self.url + "/" + path)
        return reply.body

    async def post_add_checkpoint(self, body: bytes, *, path: str = "/add-checkpoint") -> Reply:
        """POST a C2SP tlog-witness add-checkpoint body; the raw reply (any status) is returned
        so the caller can read 409's ``text/x.tlog.size`` body or 200's cosignature lines."""
        return await self.request("POST", path, body=body, content_type="text/plain", max_bytes=MAX_NOTE_BYTES)


__all__ = ["AsyncNodeClient", "NodeClient", "Reply", "check_appended", "remote_error"]

"""One exception hierarchy for the whole ledger.

Errors are grouped by who is at fault, so that callers (the HTTP layer, the CLI)
can map them without knowing every subclass:

* :class:`InputError` -- the input was malformed, oversized or inconsistent (HTTP 4xx).
* :class:`UntrustedError` -- well-formed, but a signature, proof or trust rule failed.
* :class:`UnavailableError` -- a resource (store, HSM, peer) is not usable right now.
* :class:`IntegrityError` -- stored or served data contradicts itself: corruption,
  a fork, an equivocation. These carry the evidence.

Every error carries a short machine-readable ``code`` and a message that names
what was wrong. Evidence travels as attributes, never only inside the message.
"""

from __future__ import annotations

from typing import Any


class TurtlesError(Exception):
    """Root of every error raised by turtles.

    Attributes:
        code: short stable identifier, used as the ``error`` field of HTTP replies.
        http_status: the HTTP status a server should answer with.
        message: one human-readable line naming what was wrong.
        hint: optional advice on what to do about it.
    """

    code = "error"
    http_status = 500

    def __init__(self, message: str, *, hint: str | None = None, **evidence: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.evidence: dict[str, Any] = evidence
        for name, value in evidence.items():
            setattr(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """The error as the JSON body of an HTTP reply."""
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.hint:
            body["hint"] = self.hint
        return body


# --- bad input -------------------------------------------------------------------------


class InputError(TurtlesError):
    """The input is malformed, oversized or inconsistent."""

    code = "bad_input"
    http_status = 400


class EncodingError(InputError):
    """Bytes are not valid canonical msgpack / JSON / base64 of the expected shape."""

    code = "bad_encoding"


class TooLargeError(InputError):
    """An input exceeds a size, depth or count limit."""

    code = "too_large"
    http_status = 413


class RecordError(InputError):
    """A record field is missing, ill-typed or out of range.

    Attributes:
        field: dotted path of the offending field (e.g. ``"scope.artefacts[2]"``).
        reason: why it was rejected.
    """

    code = "bad_record"

    def __init__(self, field: str, reason: str, **evidence: Any) -> None:
        super().__init__(f"{field}: {reason}", field=field, reason=reason, **evidence)


class EnvelopeError(InputError):
    """A DSSE envelope is malformed (not a signature failure: see SignatureError)."""

    code = "bad_envelope"


class KeyFormatError(InputError):
    """A key, key reference or key id cannot be parsed or is of an unsupported kind."""

    code = "bad_key"


class DuplicateError(InputError):
    """The record is already in the log; ``index`` is where it already is."""

    code = "duplicate"
    http_status = 409


class PolicyError(InputError):
    """A policy or configuration file has an unknown or ill-typed setting."""

    code = "bad_policy"


class NotFoundError(InputError):
    """The requested entry, key, artefact or log does not exist."""

    code = "not_found"
    http_status = 404


# --- verification failures ---------------------------------------------------------------


class UntrustedError(TurtlesError):
    """Well-formed input failed a signature, proof or trust check."""

    code = "untrusted"
    http_status = 403


class SignatureError(UntrustedError):
    """A signature does not verify, or no acceptable signature is present."""

    code = "bad_signature"


class UnknownSignerError(SignatureError):
    """No signature is by a key the verifier knows (``key_ids`` lists the ones claimed)."""

    code = "unknown_signer"


class NotAdmittedError(UntrustedError):
    """The signer is neither a root of the log nor a key validly delegated from one."""

    code = "not_admitted"


class ScopeError(NotAdmittedError):
    """The signer's delegation does not cover this artefact, purpose or depth."""

    code = "out_of_scope"


class RevokedError(NotAdmittedError):
    """The signing key (or a key above it) is revoked at the relevant time."""

    code = "revoked"


class ExpiredError(NotAdmittedError):
    """The record or a link above it is outside its validity window."""

    code = "expired"


class ProofError(UntrustedError):
    """An inclusion or consistency proof does not verify, or cannot be produced.

    Carries ``expected`` and ``calculated`` roots when the failure is a mismatch.
    """

    code = "bad_proof"


class NoteError(UntrustedError):
    """A signed note or checkpoint is malformed or its signature does not verify."""

    code = "bad_note"


# --- unavailable resources -----------------------------------------------------------------


class UnavailableError(TurtlesError):
    """A resource needed to answer is not usable now; retrying may succeed."""

    code = "unavailable"
    http_status = 503


class StoreLockedError(UnavailableError):
    """The LevelDB directory is held by another process."""

    code = "store_locked"


class StorageError(UnavailableError):
    """Reading or writing the store failed (I/O error)."""

    code = "storage"


class HSMError(UnavailableError):
    """The PKCS#11 module, token, session or key is not usable."""

    code = "hsm"


class OverloadedError(UnavailableError):
    """The sequencer queue is full; retry after ``retry_after`` seconds."""

    code = "overloaded"


# --- integrity violations ------------------------------------------------------------------


class IntegrityError(TurtlesError):
    """Data contradicts itself: corruption, a broken chain, a fork or an equivocation."""

    code = "integrity"
    http_status = 500


class CorruptionError(IntegrityError):
    """The local store failed a checksum, chain or root check."""

    code = "corrupt"


class ConsistencyError(IntegrityError):
    """Two views of one log cannot both be true (fork / equivocation).

    Attributes (when known): ``origin``, ``older`` and ``newer`` (the raw signed notes),
    ``proof`` (the proof that failed), ``index`` (first index of divergence).
    """

    code = "inconsistent"
    http_status = 409


__all__ = [
    "ConsistencyError",
    "CorruptionError",
    "DuplicateError",
    "EncodingError",
    "EnvelopeError",
    "ExpiredError",
    "HSMError",
    "InputError",
    "IntegrityError",
    "KeyFormatError",
    "NotAdmittedError",
    "NotFoundError",
    "NoteError",
    "OverloadedError",
    "PolicyError",
    "ProofError",
    "RecordError",
    "RevokedError",
    "ScopeError",
    "SignatureError",
    "StorageError",
    "StoreLockedError",
    "TooLargeError",
    "TurtlesError",
    "UnavailableError",
    "UnknownSignerError",
    "UntrustedError",
]

"""How a mirror's entries are checked, and what the checks hand to :class:`~ledger.mirror.Mirror`:
one compact :data:`Item` per entry, made in a worker process (:func:`check_raws`), a pool
thread (:func:`check_chunk`) or, in order and under the current keys, by the mirror's own
thread (:func:`check_now`, whose errors are the ones reported). Scheduling them is
:mod:`ledger._mirror_pages`'s business.

Why: a mirror's own process is GIL-bound. A worker parses the entry and verifies its
envelope anyway, so it also makes everything the mirror's ordered work needs -- the entry's
fields and leaf hash, the :class:`~ledger.entry.LoggedRecord` it will be admitted and
added as, its index rows -- and sends those back as plain tuples and frozen dataclasses,
which unpickle in C. The mirror then only checks the chain, admits, commits and builds
the tree: it never parses an entry a worker parsed.

An :data:`Item` is ``(seq, prev, ts, leaf, key, epoch, ids, names, logged, rows)``:

* ``seq``, ``prev``, ``ts``, ``leaf`` -- the entry's fields and leaf hash;
* ``key`` -- it holds a key record (a commit ends after it);
* ``epoch``, ``ids`` -- the mirror's key epoch read before the check and the envelope's key
  ids the gate knew then (see :mod:`ledger._mirror_pages` for how they are used);
  ``names`` -- all the envelope's key ids (so the mirror can tell which it knows now);
* ``logged`` -- the record as admitted and added if the check passed (None: not checked,
  or failed: the mirror checks it again, in order, and raises the authoritative error);
* ``rows`` -- its index rows (:func:`ledger.verification.index_rows`), empty without ``logged``.

An entry that does not parse is its :class:`~ledger.errors.TurtlesError` instead.

Invariants: a worker sends back ``None`` for anything it does not fully handle (bytes that
do not parse, any record but an attestation), and the mirror's process then does that
entry exactly as without workers. Workers never admit and never write. The mirror hashes
every raw entry it stores itself and refuses an item whose leaf hash differs (so what is
stored is what the signed tree proves, whatever a worker said).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgpack

from ledger.attestation import PAYLOAD_TYPE, Attestation, artefacts
from ledger.encoding import MAX_RECORD_BYTES
from ledger.entry import ENTRY_VERSION, Entry, LoggedRecord, entry_map
from ledger.envelope import MAX_KEYID_CHARS, MAX_SIG_BYTES, Envelope
from ledger.errors import TurtlesError
from ledger.keys import KeyId
from ledger.merkle import leaf_hash
from ledger.procverify import attestation_parts, worker_key
from ledger.records import RootRecord, Rotation, is_key_record_type
from ledger.store_keys import row_key
from ledger.verification import (
    Gatekeeper,
    Prepared,
    attestation_heads,
    index_rows,
    subject_head,
    verify_envelope,
)

Rows = list[tuple[bytes, bytes]] | tuple[()]
Item = tuple[int, bytes, int, bytes, bool, int, tuple[str, ...], tuple[str, ...], LoggedRecord | None, Rows]
Checked = Item | TurtlesError
"""One entry's result: its :data:`Item`, or why it does not parse."""

SEQ: Final = 0
PREV: Final = 1
TS: Final = 2
LEAF: Final = 3
KEY: Final = 4
EPOCH: Final = 5
IDS: Final = 6
NAMES: Final = 7
LOGGED: Final = 8
ROWS: Final = 9

MAX_SHIPPED_KEYS = 512
"""A gate that knows more keys than this is not shipped to worker processes (its pages are
checked in the thread pool): the table goes with every chunk."""

_SELF_KEYED = (RootRecord.payload_type(), Rotation.payload_type())  # records carrying their signing key


def item(origin: str, entry: Entry, prepared: Prepared | None, epoch: int, ids: tuple[str, ...]) -> Item:
    """The :data:`Item` of a parsed ``entry`` whose check gave ``prepared`` (None: none or failed)."""
    env = entry.envelope
    key, names = is_key_record_type(env.payload_type), env.key_ids
    if ids == names:
        ids = names  # one object: pickled once
    if prepared is None:
        return (entry.seq, entry.prev, entry.ts, entry.leaf_hash, key, epoch, ids, names, None, ())
    rec = LoggedRecord(origin, entry.seq, entry.ts, entry.leaf_hash, prepared.signers, prepared.record,
                       prepared.record_id)
    return (entry.seq, entry.prev, entry.ts, entry.leaf_hash, key, epoch, ids, names, rec,
            index_rows(entry.seq, prepared))


def check_raws(
    origin: str, keys: dict[str, bytes], epoch: int, raws: Sequence[bytes]
) -> tuple[int, list[Item | None]]:
    """Parse and check a mirror's raw entries against ``keys`` (runs in a worker process).

    Returns how many envelopes it checked and, per entry, its :data:`Item` (``epoch`` is
    the mirror's, read before ``keys``) or None for an entry the mirror must do itself: one
    that does not parse, or holds anything but an attestation. An attestation none of whose
    key ids ``keys`` holds is not checked (``ids`` empty: a key record ahead introduces them).
    The record is lean, as :func:`ledger.trust.attestations.lean` makes it: nothing the
    mirror does reads the statement, and the objects unpickle in C on the mirror's side.

    Entries of the common shape (an attestation with one signature) are read by
    :func:`_lean_entry` without building an :class:`Entry`; anything else by
    :meth:`Entry.from_bytes`. Strings every entry repeats (key ids, builders) are shared, so
    the answer pickles each once.
    """
    known = {kid: worker_key(der) for kid, der in keys.items()}
    one_signer: dict[str, tuple[str]] = {}  # key id -> the names tuple shared by its entries
    shared: dict[object, Any] = {}  # signer tuples and builders, one object each
    out: list[Item | None] = []
    checked = 0
    for raw in raws:
        names: tuple[str, ...]
        fields = _lean_entry(raw)
        if fields is not None:
            seq, prev, ts, payload, kid, sig = fields
            names = one_signer.get(kid) or one_signer.setdefault(kid, (kid,))
            sigs: tuple[tuple[str, bytes], ...] = ((names[0], sig),)
        else:
            try:
                entry = Entry.from_bytes(raw)
            except TurtlesError:
                out.append(None)
                continue
            env = entry.envelope
            if env.payload_type != PAYLOAD_TYPE:
                out.append(None)
                continue
            seq, prev, ts, payload = entry.seq, entry.prev, entry.ts, env.payload
            names = env.key_ids
            sigs = tuple((s.keyid, s.sig) for s in env.signatures)
        ids = names if all(k in keys for k in names) else tuple(k for k in names if k in keys)
        leaf = leaf_hash(raw)
        rec: LoggedRecord | None = None
        rows: Rows = ()
        if ids:
            checked += 1
            # verify_envelope's check of an attestation, as the append path's workers make it
            # (None on any doubt: the mirror then redoes it in order and reports it).
            parts = attestation_parts(known, payload, sigs, pack=False)
            if parts is not None:
                signers, rid, subjects, ptype, materials, builder, _ = parts
                signers = shared.setdefault(signers, signers)
                lean = Attestation.lean(artefacts(subjects), ptype, artefacts(materials) if materials else (),
                                        shared.setdefault(builder, builder))
                rec = LoggedRecord(origin, seq, ts, leaf, signers, lean, rid)
                heads = attestation_heads(rid, signers, [subject_head(digest) for _, digest in subjects])
                rows = [(row_key(head, seq), value) for head, value in heads]
        out.append((seq, prev, ts, leaf, False, epoch, ids, names, rec, rows))
    return checked, out


_ENVELOPE_KEYS: Final = ["payload", "payloadType", "signatures"]
_SIGNATURE_KEYS: Final = ["keyid", "sig"]
_INT64_MAX: Final = (1 << 63) - 1


def _lean_entry(raw: bytes) -> tuple[int, bytes, int, bytes, str, bytes] | None:
    """``(seq, prev, ts, payload, keyid, sig)`` of an entry holding an attestation with one
    signature that :meth:`Entry.from_bytes` reads as such, without building it; None for
    anything else (which :meth:`Entry.from_bytes` then reads, or refuses).

    The same checks as ``Entry.from_bytes``'s fast path and the envelope's shape, for this
    one shape: exactly these keys in canonical order, these types, the limits, and bytes
    that re-encode to themselves (so shortest forms, no duplicate keys, no float or
    extension type). Tests pin it to ``Entry.from_bytes`` on damaged and varied entries.
    """
    obj = entry_map(raw)
    if obj is None:
        return None
    env, prev, seq, ts, v = obj["env"], obj["prev"], obj["seq"], obj["ts"], obj["v"]
    if type(env) is not dict or list(env) != _ENVELOPE_KEYS or env["payloadType"] != PAYLOAD_TYPE:
        return None
    payload, sigs = env["payload"], env["signatures"]
    if type(sigs) is not list or len(sigs) != 1 or type(sigs[0]) is not dict or list(sigs[0]) != _SIGNATURE_KEYS:
        return None
    kid, sig = sigs[0]["keyid"], sigs[0]["sig"]
    if (type(kid) is not str or len(kid) > MAX_KEYID_CHARS or type(sig) is not bytes
            or not 0 < len(sig) <= MAX_SIG_BYTES or type(payload) is not bytes or len(payload) > MAX_RECORD_BYTES
            or type(prev) is not bytes or len(prev) != 32 or type(v) is not int or v != ENTRY_VERSION
            or type(seq) is not int or not 0 <= seq <= _INT64_MAX or type(ts) is not int or not 0 <= ts <= _INT64_MAX):
        return None
    if msgpack.packb(obj, use_bin_type=True) != raw:
        return None
    return seq, prev, ts, payload, kid, sig


class Tally:
    """A thread-safe count of signature checks (entries verified) made for one mirror."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, n: int) -> None:
        """Count ``n`` more checks."""
        with self._lock:
            self.value += n


def known_keys(gate: Gatekeeper, envelope: Envelope) -> tuple[str, ...]:
    """The key ids among the envelope's signatures that ``gate`` knows now."""
    return tuple(k for k in envelope.key_ids if gate.public_key(KeyId(k)) is not None)


def shipped_keys(gate: Gatekeeper) -> dict[str, bytes] | None:
    """The gate's keys as sent to worker processes (id -> DER), or None when it cannot say
    which keys it knows or knows too many (then its pages are checked in threads)."""
    key_table = getattr(gate, "key_table", None)
    if key_table is None:
        return None
    table = key_table()
    if len(table) > MAX_SHIPPED_KEYS:
        return None
    return {kid: key.der for kid, key in table.items()}


def check_chunk(
    origin: str, gate: Gatekeeper, epoch: Callable[[], int], tally: Tally, raws: Sequence[bytes]
) -> list[Checked]:
    """Parse and verify ``raws`` (a thread-pool task; safe on hostile bytes)."""
    out: list[Checked] = []
    verified = 0
    for raw in raws:
        try:
            entry = Entry.from_bytes(raw)
        except TurtlesError as e:
            out.append(e)
            continue
        seen, keys = epoch(), known_keys(gate, entry.envelope)
        if not keys and entry.envelope.payload_type not in _SELF_KEYED:
            # No signer known yet (a key record ahead in this page introduces it): the check
            # could only fail; the mirror makes it once that record is in.
            out.append(item(origin, entry, None, seen, keys))
            continue
        verified += 1
        try:
            prepared = verify_envelope(gate, entry.envelope)
        except TurtlesError:
            out.append(item(origin, entry, None, seen, keys))  # redone in order by the mirror
            continue
        out.append(item(origin, entry, prepared, seen, keys))
    tally.add(verified)
    return out


def check_now(
    origin: str, gate: Gatekeeper, tally: Tally, epoch: int, raws: Sequence[bytes]
) -> list[Item | TurtlesError]:
    """Check ``raws`` (entries that parse) against the gate as it is now (``epoch``): per
    entry its item with the record, or the error of the check -- the authoritative one."""
    done: list[Item | TurtlesError] = []
    for raw in raws:
        try:
            entry = Entry.from_bytes(raw)
            prepared = verify_envelope(gate, entry.envelope)
            done.append(item(origin, entry, prepared, epoch, known_keys(gate, entry.envelope)))
        except TurtlesError as e:
            done.append(e)
    tally.add(len(raws))
    return done


__all__ = ["EPOCH", "IDS", "KEY", "LEAF", "LOGGED", "MAX_SHIPPED_KEYS", "NAMES", "PREV", "ROWS", "SEQ", "TS",
           "Checked", "Item", "Tally", "check_chunk", "check_now", "check_raws", "item", "known_keys", "shipped_keys"]

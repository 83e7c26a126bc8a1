"""RFC 7512 ``pkcs11:`` URIs, the token a URI selects, and PINs that never show themselves.

Pure: nothing here loads a PKCS#11 module or calls into one.

Invariants:
* :func:`parse_pkcs11_uri` is strict and :meth:`Pkcs11Uri.format` canonical: every
  :class:`Pkcs11Uri` formats to a URI that parses back equal, and the parser refuses characters
  RFC 7512 allows only percent-encoded, bad escapes, non-UTF-8 text and repeated attributes.
* A PIN (a :class:`Pin`, or a URI's pin-value) never appears in a repr, a str, a log line or an
  error message; a :class:`Pin` cannot be pickled and compares in constant time.
* A URI selects a token by its token and slot attributes alone (:class:`_TokenKey`); the
  object attributes (``object``, ``id``) name a key on that token.
"""

from __future__ import annotations

import hmac
import os
import re
from dataclasses import dataclass, fields
from typing import Any

from ledger.errors import KeyFormatError

# --- RFC 7512 URIs -------------------------------------------------------------------------

_MAX_URI = 4096
_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
_PATH_SAFE = frozenset((_UNRESERVED + ":[]@!$'()*+,=&").encode())  # pk11-pchar, unescaped
_QUERY_SAFE = frozenset((_UNRESERVED + ":[]@!$'()*+,=/?|").encode())  # pk11-qchar, unescaped
_NAME = re.compile(r"[A-Za-z0-9_-]+")  # pk11-v-attr-nm-char
_VERSION = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_DIGITS = re.compile(r"[0-9]+")
_TYPES = ("public", "private", "cert", "secret-key", "data")
_REDACTED = "REDACTED"

# wire name -> (field, kind); dict order is the canonical order of format().
_PATH_ATTRS = {
    "token": ("token", "text"), "manufacturer": ("manufacturer", "text"),
    "model": ("model", "text"), "serial": ("serial", "text"),
    "object": ("object", "text"), "type": ("type", "literal"), "id": ("id", "bytes"),
    "slot-description": ("slot_description", "text"),
    "slot-manufacturer": ("slot_manufacturer", "text"), "slot-id": ("slot_id", "int"),
    "library-manufacturer": ("library_manufacturer", "text"),
    "library-description": ("library_description", "text"),
    "library-version": ("library_version", "literal"),
}  # fmt: skip
_QUERY_ATTRS = {
    "module-name": ("module_name", "text"), "module-path": ("module_path", "text"),
    "pin-source": ("pin_source", "text"), "pin-value": ("pin_value", "text"),
}  # fmt: skip


@dataclass(frozen=True, repr=False)
class Pkcs11Uri:
    """An RFC 7512 PKCS#11 URI. ``None`` means the attribute is absent; ``""`` means empty.

    Attributes are named as in RFC 7512, with ``-`` spelled ``_``. ``id`` is bytes. Vendor
    attributes keep their order, as ``(name, value)`` pairs. Construction validates: every
    instance formats to a URI that :func:`parse_pkcs11_uri` reads back equal.
    """

    token: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    serial: str | None = None
    object: str | None = None
    type: str | None = None
    id: bytes | None = None
    slot_description: str | None = None
    slot_manufacturer: str | None = None
    slot_id: int | None = None
    library_manufacturer: str | None = None
    library_description: str | None = None
    library_version: str | None = None
    module_name: str | None = None
    module_path: str | None = None
    pin_source: str | None = None
    pin_value: str | None = None
    vendor_path: tuple[tuple[str, str], ...] = ()
    vendor_query: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.type is not None and self.type not in _TYPES:
            raise KeyFormatError(
                f"pkcs11 URI: type must be one of {', '.join(_TYPES)}, not {self.type!r}"
            )
        if self.slot_id is not None and not 0 <= self.slot_id < 2**64:
            raise KeyFormatError(f"pkcs11 URI: slot-id {self.slot_id} is out of range")
        if self.library_version is not None and not _VERSION.fullmatch(self.library_version):
            raise KeyFormatError(
                f"pkcs11 URI: library-version must be MAJOR[.MINOR] digits, not {self.library_version!r}"
            )
        if self.module_path is not None and not os.path.isabs(self.module_path):
            raise KeyFormatError(
                f"pkcs11 URI: module-path must be absolute, not {self.module_path!r}"
            )
        if self.pin_source is not None and self.pin_value is not None:
            raise KeyFormatError(
                "pkcs11 URI: give pin-source or pin-value, not both (RFC 7512 2.4)"
            )
        for component, pairs in (("path", self.vendor_path), ("query", self.vendor_query)):
            seen: set[str] = set()
            for name, _ in pairs:
                if not _NAME.fullmatch(name) or name != name.lower():
                    raise KeyFormatError(f"pkcs11 URI: bad {component} attribute name {name!r}")
                if name in _PATH_ATTRS or name in _QUERY_ATTRS:
                    raise KeyFormatError(
                        f"pkcs11 URI: {name} is a standard attribute, not a vendor one"
                    )
                if component == "path" and name in seen:
                    raise KeyFormatError(f"pkcs11 URI: attribute {name} appears twice")
                seen.add(name)

    def format(self, *, redact_pin: bool = False) -> str:
        """The canonical URI: standard attributes in a fixed order, then vendor ones by name.

        Text is UTF-8 percent-encoded with upper-case hex wherever RFC 7512 does not allow the
        character bare; ``id`` is percent-encoded byte by byte. With ``redact_pin``, a pin-value
        is written as ``REDACTED`` (for messages; the result is still a valid URI).
        """
        path = [(name, getattr(self, f)) for name, (f, _) in _PATH_ATTRS.items()]
        path += sorted(self.vendor_path)
        query = [(name, getattr(self, f)) for name, (f, _) in _QUERY_ATTRS.items()]
        if redact_pin and self.pin_value is not None:
            query = [(n, _REDACTED if n == "pin-value" else v) for n, v in query]
        query += sorted(self.vendor_query, key=lambda pair: pair[0])  # stable: repeats keep order
        text = "pkcs11:" + ";".join(
            _format_attr(n, v, _PATH_SAFE) for n, v in path if v is not None
        )
        args = [_format_attr(n, v, _QUERY_SAFE) for n, v in query if v is not None]
        return text + ("?" + "&".join(args) if args else "")

    def __str__(self) -> str:
        return self.format(redact_pin=True)

    def __repr__(self) -> str:
        return f"Pkcs11Uri({self.format(redact_pin=True)!r})"


def parse_pkcs11_uri(text: str) -> Pkcs11Uri:
    """Parse an RFC 7512 URI strictly.

    Refused: another scheme, characters RFC 7512 allows only percent-encoded, bad escapes,
    text that is not UTF-8, empty or repeated attributes (vendor query attributes may repeat),
    a percent-escape in ``type``/``slot-id``/``library-version``, query attributes in the path
    and path attributes in the query, a relative module-path, pin-source with pin-value.
    Attribute names and ``type`` are case-insensitive and kept lower-case.

    Raises:
        KeyFormatError: naming the attribute at fault (never echoing a pin-value).
    """
    if not isinstance(text, str):
        raise KeyFormatError(f"pkcs11 URI must be text, not {type(text).__name__}")
    if len(text) > _MAX_URI:
        raise KeyFormatError(f"pkcs11 URI is {len(text)} characters, more than {_MAX_URI}")
    scheme, colon, rest = text.partition(":")
    if not colon or scheme.lower() != "pkcs11":
        raise KeyFormatError("not a pkcs11 URI: it must start with 'pkcs11:'")
    path, _, query = rest.partition("?")  # '?' may appear in query values, never in the path
    values: dict[str, Any] = {}
    vendor_path = _parse_component(path, ";", _PATH_ATTRS, _QUERY_ATTRS, _PATH_SAFE, "path", values)
    vendor_query = _parse_component(
        query, "&", _QUERY_ATTRS, _PATH_ATTRS, _QUERY_SAFE, "query", values
    )
    return Pkcs11Uri(**values, vendor_path=tuple(vendor_path), vendor_query=tuple(vendor_query))


def _parse_component(
    text: str,
    sep: str,
    own: dict[str, tuple[str, str]],
    other: dict[str, tuple[str, str]],
    safe: frozenset[int],
    component: str,
    values: dict[str, Any],
) -> list[tuple[str, str]]:
    vendor: list[tuple[str, str]] = []
    if not text:
        return vendor
    for item in text.split(sep):
        raw_name, eq, raw = item.partition("=")
        if not eq or not _NAME.fullmatch(raw_name):
            shown = "an empty attribute" if not item else f"attribute {raw_name[:40]!r}"
            raise KeyFormatError(f"pkcs11 URI: {shown} in the {component} is not name=value")
        name = raw_name.lower()  # ABNF literals are case-insensitive (RFC 5234 2.3)
        if name in other:
            home = "query" if component == "path" else "path"
            raise KeyFormatError(
                f"pkcs11 URI: attribute {name} belongs in the {home}, not the {component}"
            )
        if name not in own:
            vendor.append((name, _decode_text(raw, safe, name)))
            continue
        fieldname, kind = own[name]
        if fieldname in values:
            raise KeyFormatError(f"pkcs11 URI: attribute {name} appears twice")
        values[fieldname] = _decode_value(raw, kind, safe, name)
    return vendor


def _decode_value(raw: str, kind: str, safe: frozenset[int], name: str) -> Any:
    if kind == "bytes":
        return _unescape(raw, safe, name)
    if kind == "text":
        return _decode_text(raw, safe, name)
    # type, slot-id and library-version are literals and digits in the ABNF: no escapes.
    if "%" in raw:
        raise KeyFormatError(f"pkcs11 URI: {name} must be written out, not percent-encoded")
    if name == "type":
        if raw.lower() not in _TYPES:
            raise KeyFormatError(
                f"pkcs11 URI: type must be one of {', '.join(_TYPES)}, not {raw[:40]!r}"
            )
        return raw.lower()
    if name == "slot-id":
        if not _DIGITS.fullmatch(raw):
            raise KeyFormatError(f"pkcs11 URI: slot-id must be decimal digits, not {raw[:40]!r}")
        return int(raw)
    return raw  # library-version: checked by Pkcs11Uri


def _unescape(raw: str, safe: frozenset[int], name: str) -> bytes:
    out = bytearray()
    shown = "pin-value" if name == "pin-value" else f"{name} value"
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "%":
            pair = raw[i + 1 : i + 3]
            if len(pair) != 2 or any(h not in "0123456789abcdefABCDEF" for h in pair):
                raise KeyFormatError(f"pkcs11 URI: bad percent-escape in the {shown}")
            out.append(int(pair, 16))
            i += 3
            continue
        if ord(c) > 127 or ord(c) not in safe:
            raise KeyFormatError(
                f"pkcs11 URI: the {shown} has a character that must be percent-encoded"
            )
        out.append(ord(c))
        i += 1
    return bytes(out)


def _decode_text(raw: str, safe: frozenset[int], name: str) -> str:
    try:
        return _unescape(raw, safe, name).decode("utf-8")
    except UnicodeDecodeError as e:
        shown = "pin-value" if name == "pin-value" else f"{name} value"
        raise KeyFormatError(f"pkcs11 URI: the {shown} is not UTF-8") from e


def _format_attr(name: str, value: object, safe: frozenset[int]) -> str:
    if isinstance(value, bytes):  # id: binary, so every byte is escaped
        return f"{name}=" + "".join(f"%{b:02X}" for b in value)
    data = str(value).encode("utf-8")
    return f"{name}=" + "".join(chr(b) if b in safe else f"%{b:02X}" for b in data)


# --- secrets ------------------------------------------------------------------------------------


class Pin:
    """A PKCS#11 user PIN that never shows itself: not in repr, str or comparisons' output."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise KeyFormatError("PIN must be a non-empty string")
        self._value = value

    def reveal(self) -> str:
        """The PIN itself, for the one call that logs in."""
        return self._value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pin) and hmac.compare_digest(
            self._value.encode(), other._value.encode()
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "Pin(<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a Pin cannot be pickled")


def as_pin(value: Pin | str | None) -> Pin | None:
    """``value`` as a :class:`Pin` (``None`` stays ``None``)."""
    return value if value is None or isinstance(value, Pin) else Pin(value)


# --- the token a URI selects --------------------------------------------------------------------


@dataclass(frozen=True)
class _TokenKey:
    """The token-selecting attributes of a URI; one session is kept per distinct selector."""

    token: str | None = None
    serial: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    slot_id: int | None = None
    slot_description: str | None = None
    slot_manufacturer: str | None = None

    @classmethod
    def of(cls, uri: Pkcs11Uri) -> _TokenKey:
        return cls(**{f.name: getattr(uri, f.name) for f in fields(cls)})

    def __str__(self) -> str:
        given = {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }
        if list(given) == ["token"]:
            return f"token {self.token!r}"
        return "token " + (" ".join(f"{k}={v!r}" for k, v in given.items()) or "(any)")

    def matches(self, slot: Any, token: Any) -> bool:
        serial = (
            token.serial.decode("ascii", "replace").strip()
            if isinstance(token.serial, bytes)
            else token.serial
        )
        have = {
            "token": token.label, "serial": serial, "manufacturer": token.manufacturer_id,
            "model": token.model, "slot_id": slot.slot_id, "slot_description": slot.slot_description,
            "slot_manufacturer": slot.manufacturer_id,
        }  # fmt: skip
        return all(getattr(self, k) is None or getattr(self, k) == v for k, v in have.items())


def _describe_key(uri: Pkcs11Uri) -> str:
    parts = []
    if uri.object is not None:
        parts.append(f"labelled {uri.object!r}")
    if uri.id is not None:
        parts.append(f"with id {uri.id.hex()}")
    return " ".join(parts)


__all__ = [
    "Pin",
    "Pkcs11Uri",
    "as_pin",
    "parse_pkcs11_uri",
]

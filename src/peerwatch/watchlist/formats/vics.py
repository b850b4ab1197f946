"""Project VIC "VICS" JSON lists (data models 1.x and 2.0), streamed in constant memory.

Both layouts keep their records in the top-level ``value`` array (an OData feed; the metadata key
is ``odata.metadata`` or ``@odata.context`` and is ignored):

- 1.x (and 2.0 "#Media" feeds): ``value`` holds the media records themselves, each with
  ``MD5``/``SHA1``/``SHA256``, ``Category``, ``MediaSize``, ``MediaID``...;
- 2.0 case feeds: ``value`` holds cases, each with a ``Media`` array of media records.

Both are accepted in one file: an element of ``value`` with a ``Media`` array is a case whose media
are records (and the case is a record too if it carries a hash itself); any other element is a
record. A top-level JSON array is read like ``value``. Keys are matched case-insensitively.

The file is read with ijson's event parser and only one media record is ever built in memory, so a
multi-gigabyte export needs constant memory (a case's other keys are kept while its media stream
by). Records are numbered from 1 across the file: location "record 12 (MediaID 4711)".

A record without any hash, or with a malformed one, is an invalid record (raised, or reported to
`on_invalid` and skipped). Truncated or malformed JSON is always raised, naming the record reached.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import BinaryIO

import ijson
from ijson.common import ObjectBuilder

from peerwatch.domain.hashes import Digest, HashKind, HashParseError, parse_hash
from peerwatch.errors import InputError
from peerwatch.watchlist.formats.invalid import reject
from peerwatch.watchlist.item import AttributeValue, InvalidHandler, ParsedItem

# (lower-case key, kind, the field name VICS uses)
_HASH_FIELDS = (
    ("md5", HashKind.MD5, "MD5"),
    ("sha1", HashKind.SHA1, "SHA1"),
    ("sha256", HashKind.SHA256, "SHA256"),
)
# Media fields kept as item attributes, under their VICS names.
_ATTRIBUTE_FIELDS = ("MediaID", "VictimIdentified", "OffenderIdentified", "IsDistributed", "Series")
_NAME_FIELDS = ("name", "filename")
_OPEN = ("start_map", "start_array")
_CLOSE = ("end_map", "end_array")

_Event = tuple[str, object]


class _TruncatedError(Exception):
    """The event stream ended inside a value."""


class _NotVicsError(Exception):
    """Well-formed JSON that is not laid out like a VICS export."""


class _NotAnObject:
    """A `value`/`Media` element that is not a JSON object (an invalid record)."""

    def __init__(self, value: object) -> None:
        self.value = value


def _backend() -> ModuleType:
    # Prefer the C backend (yajl2_c): several times faster; the default pick is the fallback.
    try:
        backend: ModuleType = ijson.get_backend("yajl2_c")
    except ImportError:
        backend = ijson
    return backend


def parse(
    stream: BinaryIO,
    *,
    source: str,
    kind: HashKind | None = None,
    default_category: str | None = None,
    on_invalid: InvalidHandler | None = None,
) -> Iterator[ParsedItem]:
    """Yield one item per media record. `kind` is ignored: VICS names each hash's kind."""
    del kind
    events: Iterator[_Event] = _backend().basic_parse(stream, use_float=True)
    records = _records(events)
    number = 0
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except _NotVicsError as exc:
            raise InputError(f"not a VICS export: {exc}", source=source, field="value") from None
        except (_TruncatedError, ijson.JSONError, ValueError, OverflowError) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(
                f"truncated or invalid JSON ({detail})",
                source=source,
                location=f"record {number + 1}",  # the record being read when it broke
            ) from None
        number += 1
        location = _location(record, number)
        try:
            item = _item(record, location, default_category)
        except InputError as exc:
            reject(
                InputError(exc.reason, source=source, location=location, field=exc.field),
                on_invalid,
            )
            continue
        yield item


# --- event walking ------------------------------------------------------------------------------


def _next(events: Iterator[_Event]) -> _Event:
    try:
        return next(events)
    except StopIteration:
        raise _TruncatedError("the file ends inside a value") from None


def _build(first: _Event, events: Iterator[_Event], builder: ObjectBuilder | None = None) -> object:
    """Consume one whole JSON value starting with `first`; build it (or feed `builder`)."""
    ev, val = first
    if ev not in _OPEN:
        if builder is not None:
            builder.event(ev, val)
        return val
    own = builder is None
    b = ObjectBuilder() if builder is None else builder
    b.event(ev, val)
    depth = 1
    while depth:
        ev, val = _next(events)
        b.event(ev, val)
        if ev in _OPEN:
            depth += 1
        elif ev in _CLOSE:
            depth -= 1
    return b.value if own else None


def _skip(first: _Event, events: Iterator[_Event]) -> None:
    if first[0] not in _OPEN:
        return
    depth = 1
    while depth:
        ev, _ = _next(events)
        if ev in _OPEN:
            depth += 1
        elif ev in _CLOSE:
            depth -= 1


def _is_key(value: object, name: str) -> bool:
    return isinstance(value, str) and value.lower() == name


def _records(events: Iterator[_Event]) -> Iterator[object]:
    """Yield every media record of the document (a dict, or `_NotAnObject`)."""
    ev, _ = _next(events)
    if ev == "start_array":
        yield from _value_array(events)
    elif ev == "start_map":
        found = False
        while True:
            ev, key = _next(events)
            if ev == "end_map":
                break
            value = _next(events)
            if not found and _is_key(key, "value") and value[0] == "start_array":
                found = True
                yield from _value_array(events)
            else:
                _skip(value, events)
        if not found:
            raise _NotVicsError("no top-level 'value' array")
    else:
        raise _NotVicsError("the top level is not a JSON object or array")
    for _ in events:  # drain, so that trailing garbage is reported like any other bad JSON
        pass


def _value_array(events: Iterator[_Event]) -> Iterator[object]:
    while True:
        ev, val = _next(events)
        if ev == "end_array":
            return
        if ev == "start_map":
            yield from _value_element(events)
        else:
            yield _NotAnObject(_build((ev, val), events))


def _value_element(events: Iterator[_Event]) -> Iterator[object]:
    """One element of `value` (its start_map already read): a media record, or a case with a
    `Media` array whose records are yielded one at a time as they stream by."""
    builder = ObjectBuilder()
    builder.event("start_map", None)
    is_case = False
    while True:
        ev, key = _next(events)
        if ev == "end_map":
            break
        value = _next(events)
        if _is_key(key, "media") and value[0] == "start_array":
            is_case = True
            yield from _media_array(events)
            continue
        builder.event("map_key", key)
        _build(value, events, builder)
    builder.event("end_map", None)
    element = builder.value
    if not is_case or (isinstance(element, dict) and _has_hash_key(element)):
        yield element


def _media_array(events: Iterator[_Event]) -> Iterator[object]:
    while True:
        ev, val = _next(events)
        if ev == "end_array":
            return
        built = _build((ev, val), events)
        yield built if ev == "start_map" else _NotAnObject(built)


def _has_hash_key(element: dict[str, object]) -> bool:
    keys = {k.lower() for k in element}
    return any(key in keys for key, _, _ in _HASH_FIELDS)


# --- record conversion --------------------------------------------------------------------------


def _fields(record: object) -> dict[str, object]:
    if not isinstance(record, dict):
        raise InputError("not a JSON object", field="Media")
    return {str(k).lower(): v for k, v in record.items()}


def _location(record: object, number: int) -> str:
    media_id = record.get("MediaID") if isinstance(record, dict) else None
    if media_id is None and isinstance(record, dict):
        media_id = next((v for k, v in record.items() if k.lower() == "mediaid"), None)
    if isinstance(media_id, int | str) and not isinstance(media_id, bool) and media_id != "":
        return f"record {number} (MediaID {media_id})"
    return f"record {number}"


def _item(record: object, location: str, default_category: str | None) -> ParsedItem:
    """Convert one media record; raises InputError with `field` (source/location added later)."""
    fields = _fields(record)
    hashes: list[Digest] = []
    for key, kind, label in _HASH_FIELDS:
        value = fields.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise InputError(f"not a string: {value!r}", field=label)
        try:
            hashes.append(parse_hash(value, kind))
        except HashParseError as exc:
            raise InputError(str(exc), field=label) from None
    if not hashes:
        raise InputError("no MD5, SHA1 or SHA256 value", field="MD5")
    category = _category(fields.get("category"))
    attributes: dict[str, AttributeValue] = {}
    for label in _ATTRIBUTE_FIELDS:
        if label.lower() in fields:
            attributes[label] = _attribute(fields[label.lower()])
    name = next(
        (v for v in (fields.get(k) for k in _NAME_FIELDS) if isinstance(v, str) and v), None
    )
    return ParsedItem(
        location=location,
        hashes=tuple(hashes),
        category=category if category is not None else default_category,
        name=name,
        size=_size(fields.get("mediasize")),
        attributes=attributes,
    )


def _category(value: object) -> str | None:
    """VICS categories are small integers (1.x) or strings; both are kept as text."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InputError(f"not a category: {value!r}", field="Category")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float | str):
        return str(value).strip() or None
    raise InputError(f"not a category: {value!r}", field="Category")


def _size(value: object) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdecimal() and value.strip().isascii():
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise InputError(f"not a byte count: {value!r}", field="MediaSize")


def _attribute(value: object) -> AttributeValue:
    """Keep JSON scalars as they are; 'true'/'false' strings become booleans."""
    if value is None or isinstance(value, bool | int | str):
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return str(value)

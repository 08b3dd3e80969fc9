"""Stage 1: raw Kafka bytes in, a decoded message or a rejection out.

Decoding is ours (the Faust topic uses the raw serializer) so the bad-input policy is explicit
and tested: nothing that cannot be labelled is ever dropped or guessed at; it is rejected with a
machine-readable reason and later dead-lettered with its original bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from worker import textfields
from worker.limits import Limits
from worker.records import CORRUPT_BATCH_HEADER, RawRecord, Reason, Rejected, Source, TextMessage
from worker.textfields import FieldProblem

# Fields the worker writes itself; an input field of the same name is replaced.
_OWN_FIELDS = frozenset(
    ["id", "text", "label", "confidence", "scores", "cluster_id", "cluster_similarity",
     "model_version", "source", "received_at", "processed_at", "route", "min_confidence",
     "explanation"]
)


class _Invalid(Exception):
    """Why a value cannot be labelled (becomes a Rejected with the record's original bytes)."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def decode(
    value: bytes | None,
    source: Source,
    *,
    max_bytes: int | Limits,
    key: bytes | None = None,
    received_at: float = 0.0,
    timestamp: float | None = None,
    headers: tuple[tuple[str, bytes], ...] = (),
    text_fields: tuple[str, ...] = textfields.DEFAULT,
) -> TextMessage | Rejected:
    """Decode one raw record value per the input contract. `max_bytes`: the largest value, or the
    worker's limits (which also count the key and headers: the record's dead letter must fit).
    `text_fields`: the fields the serving version's text is made of (worker/textfields.py)."""
    if headers and headers[0][0] == CORRUPT_BATCH_HEADER:
        return _corrupt_batch(value, source, headers[0][1])
    undecodable = _undecodable(headers)
    if undecodable is not None:
        detail, repaired = undecodable
        return Rejected("undecodable_record", detail, value, source, key, repaired)
    try:
        text, msg_id, fields = _unpack(value, source, max_bytes, key, headers, text_fields)
    except _Invalid as exc:
        return Rejected(exc.reason, exc.detail, value, source, key, headers)
    return TextMessage(msg_id, text, source, key, received_at, timestamp, fields)


def _corrupt_batch(value: bytes | None, source: Source, about: bytes) -> Rejected:
    """The dead letter of a record batch no client can read (worker/fetching.py hands it over as one
    record at its last offset): the batch's bytes, and the first offset it covers in a header."""
    info = orjson.loads(about)
    first, last = info["first_offset"], info["last_offset"]
    detail = (f"record batch offsets {first}..{last} cannot be read by any client ({info['why']}); skipped: the "
              "value is the batch's bytes as the broker served them")
    return Rejected("corrupt_batch", detail, value, source, None, (("source_first_offset", str(first).encode()),))


def _undecodable(headers: tuple[tuple[str, bytes], ...]) -> tuple[str, tuple[tuple[str, bytes], ...]] | None:
    """(why, the headers with their keys made valid) of a record whose header keys are not UTF-8,
    or None. Such keys reach us with their bytes escaped as lone surrogates (worker/fetching.py);
    Kafka header keys are strings, so they cannot be written back as they were."""
    bad = [name for name, _ in headers if not _is_utf8(name)]
    if not bad:
        return None
    raw = ", ".join(repr(_key_bytes(name)) for name in bad)
    detail = (f"header key(s) {raw} are not UTF-8: no Kafka client can decode this record; dead-lettered with "
              "its value and key, and its headers with U+FFFD for the invalid bytes of their keys")
    return detail, tuple((_key_bytes(name).decode("utf-8", "replace"), data) for name, data in headers)


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _key_bytes(name: str) -> bytes:
    """The bytes of a header key as it was in Kafka."""
    return name.encode("utf-8", "surrogateescape")


def decode_records(records: Sequence[RawRecord], max_bytes: int | Limits, received_at: float,
                   text_fields: tuple[str, ...] = textfields.DEFAULT,
                   ) -> tuple[list[tuple[RawRecord, TextMessage]], list[Rejected]]:
    """A batch decoded: the valid records with their messages, and the rejected ones (both in order).
    `text_fields`: those of the version that labels this batch."""
    valid: list[tuple[RawRecord, TextMessage]] = []
    rejected: list[Rejected] = []
    for rec in records:
        decoded = decode(rec.value, rec.source, max_bytes=max_bytes, key=rec.key, received_at=received_at,
                         timestamp=rec.timestamp, headers=rec.headers, text_fields=text_fields)
        if isinstance(decoded, TextMessage):
            valid.append((rec, decoded))
        else:
            rejected.append(decoded)
    return valid, rejected


def _unpack(value: bytes | None, source: Source, max_bytes: int | Limits, key: bytes | None,
            headers: tuple[tuple[str, bytes], ...], text_fields: tuple[str, ...]) -> tuple[str, str, dict[str, Any]]:
    """(text, id, passthrough fields) of a record value; raises _Invalid saying why there are none."""
    if value is None:
        raise _Invalid("tombstone", "record value is null")
    if isinstance(max_bytes, Limits):
        too_large = max_bytes.too_large(key, value, headers)
    else:
        too_large = f"{len(value)} bytes > limit {max_bytes}" if len(value) > max_bytes else None
    if too_large is not None:
        raise _Invalid("too_large", too_large)
    try:
        decoded = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Invalid("invalid_utf8", str(exc)) from None
    if decoded.lstrip().startswith("{"):
        # Looks like JSON, so it must be JSON: broken JSON is never labelled as prose.
        text, msg_id, fields = _unpack_json(value, source.default_id(), text_fields)
    elif text_fields != textfields.DEFAULT:
        raise _Invalid("missing_field", f"no '{text_fields[0]}' field: the value is plain text, not a JSON object, "
                                        f"and the serving version's text is built from {_named(text_fields)}")
    else:
        text, msg_id, fields = decoded, source.default_id(), {}
    if not text.strip():
        of = "" if text_fields == textfields.DEFAULT else f" (every one of {_named(text_fields)})"
        raise _Invalid("empty_text", f"text is empty or whitespace only{of}")
    return text, msg_id, fields


def _unpack_json(value: bytes, default_id: str, text_fields: tuple[str, ...]) -> tuple[str, str, dict[str, Any]]:
    """(text, id, passthrough fields) of a JSON object value."""
    try:
        obj: dict[str, Any] = orjson.loads(value)  # a value starting with '{' parses to an object
    except orjson.JSONDecodeError as exc:
        raise _Invalid("invalid_json", str(exc)) from None
    try:
        text = textfields.text_of(obj, text_fields)
    except FieldProblem as exc:
        raise _field_invalid(exc, text_fields) from None
    msg_id = default_id
    if "id" in obj:
        given = obj.pop("id")
        if not isinstance(given, str) or not given:
            raise _Invalid("invalid_id", f"'id' must be a non-empty string, got {type(given).__name__}")
        msg_id = given
    return text, msg_id, {k: v for k, v in obj.items() if k not in _OWN_FIELDS}


def _field_invalid(problem: FieldProblem, text_fields: tuple[str, ...]) -> _Invalid:
    """The rejection of a record without a usable text field; the single field `text` keeps its own reasons."""
    if text_fields == textfields.DEFAULT:
        if problem.kind == "missing":
            return _Invalid("missing_text", "JSON object has no 'text' field")
        return _Invalid("text_not_string", f"'text' is a {problem.type_name}")
    reason: Reason = "missing_field" if problem.kind == "missing" else "field_not_string"
    return _Invalid(reason, f"{problem} (the serving version's text is built from {_named(text_fields)})")


def _named(text_fields: tuple[str, ...]) -> str:
    return ", ".join(f"'{name}'" for name in text_fields)

"""Which input fields make a record's text, and how they are joined: written once for the trainer
(training/data.py) and the worker (worker/decode.py), so a version labels the text it learned from.

A version's manifest lists its fields under `text_fields` (a version without it: `["text"]`). The
text is the fields' values in that order, those empty or whitespace-only left out, joined by a blank
line: `{"subject": "Refund", "body": "Hi, ..."}` with `["subject", "body"]` is "Refund\\n\\nHi, ...".
A field that is absent, or not a string (null included), makes the record unusable: the trainer
skips the row (reported), the worker dead-letters it (`missing_field`, `field_not_string`; with the
single field `text`: `missing_text`, `text_not_string`). All fields empty gives an empty text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

DEFAULT: tuple[str, ...] = ("text",)
SEPARATOR = "\n\n"


class FieldProblem(ValueError):
    """A text field is absent from a record (`missing`) or is not a string (`not_string`)."""

    def __init__(self, field: str, kind: Literal["missing", "not_string"], value: object = None) -> None:
        self.field, self.kind, self.type_name = field, kind, type(value).__name__
        what = "is missing" if kind == "missing" else f"is a {self.type_name}, not a string"
        super().__init__(f"text field '{field}' {what}")


def join(values: Sequence[str]) -> str:
    """The text of these field values: the non-blank ones, in order, separated by a blank line."""
    if len(values) == 1:
        return values[0]  # one field: its value exactly as given (blank or not)
    return SEPARATOR.join(v for v in values if v.strip())


def text_of(record: Mapping[str, Any], fields: Sequence[str]) -> str:
    """The text `fields` make of `record`; raises FieldProblem for the first absent or non-string one."""
    values: list[str] = []
    for name in fields:
        if name not in record:
            raise FieldProblem(name, "missing")
        value = record[name]
        if not isinstance(value, str):
            raise FieldProblem(name, "not_string", value)
        values.append(value)
    return join(values)


def parse(spec: str) -> tuple[str, ...]:
    """`"subject,body"` -> ("subject", "body"); raises ValueError for an empty or repeated name."""
    names = tuple(part.strip() for part in spec.split(","))
    if any(not name for name in names):
        raise ValueError(f"empty field name in {spec!r} (give names separated by commas, e.g. subject,body)")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"field(s) {', '.join(repeated)} given more than once")
    return names


def of_manifest(manifest: Mapping[str, Any]) -> tuple[str, ...]:
    """The text fields a version's manifest names (`["text"]` when it names none); raises ValueError
    when `text_fields` is not a list of distinct non-empty strings."""
    given = manifest.get("text_fields")
    if given is None:
        return DEFAULT
    if (not isinstance(given, list) or not given or not all(isinstance(x, str) and x for x in given)
            or len(set(given)) != len(given)):
        raise ValueError(f"'text_fields' must list distinct non-empty strings, got {given!r}")
    return tuple(given)

"""The one join of text fields, shared by the trainer and the worker."""

from __future__ import annotations

import pytest

from worker import textfields
from worker.textfields import FieldProblem


def test_fields_are_joined_in_their_order_by_a_blank_line_leaving_out_blank_ones() -> None:
    record = {"body": "Hi,\nmy invoice is wrong.", "subject": "Refund", "lang": "en"}
    assert textfields.text_of(record, ["subject", "body"]) == "Refund\n\nHi,\nmy invoice is wrong."
    assert textfields.text_of(record, ["body", "subject"]) == "Hi,\nmy invoice is wrong.\n\nRefund"
    assert textfields.text_of({"subject": " \t", "body": "only the body"}, ["subject", "body"]) == "only the body"
    assert textfields.text_of({"subject": "", "body": "\n"}, ["subject", "body"]) == ""


def test_a_single_field_is_its_value_exactly() -> None:
    """Versions trained on `text` (all before text fields existed) see the text unchanged."""
    assert textfields.text_of({"text": "  spaced \n"}, ["text"]) == "  spaced \n"
    assert textfields.text_of({"text": " "}, textfields.DEFAULT) == " "


@pytest.mark.parametrize(("record", "field", "kind"), [
    ({"body": "b"}, "subject", "missing"),
    ({"subject": "s"}, "body", "missing"),
    ({"subject": None, "body": "b"}, "subject", "not_string"),
    ({"subject": "s", "body": ["b"]}, "body", "not_string"),
    ({"subject": 3, "body": "b"}, "subject", "not_string"),
])
def test_an_absent_or_non_string_field_is_named(record: dict[str, object], field: str, kind: str) -> None:
    with pytest.raises(FieldProblem) as caught:
        textfields.text_of(record, ["subject", "body"])
    assert (caught.value.field, caught.value.kind) == (field, kind)
    assert f"'{field}'" in str(caught.value)


def test_field_lists_are_parsed_and_checked() -> None:
    assert textfields.parse("text") == ("text",)
    assert textfields.parse("subject, body") == ("subject", "body")
    for bad, why in (("", "empty field name"), ("subject,,body", "empty field name"), ("a,b,a", "a given more")):
        with pytest.raises(ValueError, match=why):
            textfields.parse(bad)


def test_a_manifest_without_text_fields_means_text() -> None:
    assert textfields.of_manifest({"labels": ["a", "b"]}) == ("text",)
    assert textfields.of_manifest({"text_fields": ["subject", "body"]}) == ("subject", "body")
    for bad in ([], "subject", ["subject", ""], ["a", "a"], [1]):
        with pytest.raises(ValueError, match="text_fields"):
            textfields.of_manifest({"text_fields": bad})

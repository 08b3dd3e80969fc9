"""Mail on a real broker: a version trained on subject + body labels records built from both fields,
and dead-letters a record that lacks one, naming it."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.factories import NEWS, TINY
from tests.integration.conftest import Stack, stack_on
from training.train import train
from worker import registry

pytestmark = pytest.mark.integration

# The label is in the subject only; the bodies are news sentences drawn alike for both labels, so a
# model that read the body alone would be at chance.
SUBJECTS = {
    "billing": ["Invoice {n} overdue", "Refund for order {n}", "Payment failed for invoice {n}",
                "Charged twice on invoice {n}", "Billing error on order {n}"],
    "access": ["Password reset for account {n} not working", "Cannot log in to account {n}",
               "Account {n} locked after login attempts", "Login code for account {n} never arrives",
               "Password expired on account {n}"],
}


def mail(label: str, n: int, rng: random.Random) -> dict[str, str]:
    return {"subject": rng.choice(SUBJECTS[label]).format(n=n), "body": rng.choice(NEWS), "label": label}


@pytest.fixture
def mail_stack(broker: str, tmp_path: Path) -> Iterator[Stack]:
    """A registry with one version trained on subject + body of 200 mails, and a stack serving it."""
    rng = random.Random(7)
    data = tmp_path / "mail.jsonl"
    data.write_bytes(b"\n".join(orjson.dumps(mail(label, n, rng)) for n in range(100) for label in SUBJECTS))
    model_dir = tmp_path / "registry"
    version = train([data], model_dir, TINY.model_copy(update={"text_field": "subject,body", "max_rows": None})).version
    assert version == 1
    with stack_on(broker, model_dir, tmp_path) as s:
        yield s


def test_a_subject_and_body_version_labels_mail_from_both_fields(mail_stack: Stack) -> None:
    stack = mail_stack
    assert registry.verify(stack.model_dir / "1")["text_fields"] == ["subject", "body"]
    rng = random.Random(11)
    # Each body twice, under a billing subject and under an access one: only the subject tells them apart.
    sent = [{"id": f"{label}-{i}", "subject": rng.choice(SUBJECTS[label]).format(n=1000 + i), "body": NEWS[i],
             "from": "customer@example.com"} for i in range(len(NEWS)) for label in SUBJECTS]
    no_subject = {"id": "no-subject", "body": "Please refund my invoice.", "text": "a 'text' is not enough"}
    values = [orjson.dumps(m) for m in [*sent, no_subject]]
    assert stack.send(values) == len(values)
    stack.start_worker()

    labeled = stack.read([stack.labeled], len(sent))
    outputs = {o["id"]: o for o in (orjson.loads(r.value or b"") for r in labeled)}
    assert set(outputs) == {m["id"] for m in sent}, stack.logs()
    for m in sent:
        out = outputs[m["id"]]
        assert out["label"] == m["id"].split("-")[0], out
        assert out["text"] == f"{m['subject']}\n\n{m['body']}"  # built as the trainer built it
        assert (out["subject"], out["body"], out["from"], out["model_version"]) == (
            m["subject"], m["body"], "customer@example.com", 1)

    (dead,) = stack.read([stack.dlq], 1, settle=1.0)
    assert dead.value == values[-1]  # the original bytes
    assert dead.headers["error"] == "missing_field"
    assert "text field 'subject' is missing" in dead.headers["error_detail"]
    assert stack.stop_worker(stack.workers[0]) == 0

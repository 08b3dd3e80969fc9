"""`textstream dlq replay` on a real broker: a dead letter replayed is labelled once, and a second
replay sends nothing."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from commands.main import main
from tests.factories import NEWS
from tests.integration.conftest import Stack
from worker import topics
from worker.limits import Limits
from worker.records import RawRecord, Rejected, Source
from worker.replay import MARKER, read_topic
from worker.route import dead_letter

pytestmark = pytest.mark.integration


async def write_dead_letters(stack: Stack, rejected: list[Rejected]) -> None:
    """Dead letters exactly as a worker writes them (worker/route.py)."""
    await topics.ensure_topics(stack.bootstrap, [stack.dlq, stack.raw], 4)
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    await producer.start()
    try:
        for rej in rejected:
            out = dead_letter(stack.dlq, Limits(1_000_000, 1_000_000, 2000, stack.raw), rej)
            await producer.send_and_wait(out.topic, out.value, key=out.key, headers=out.headers, partition=0)
    finally:
        await producer.stop()


def test_a_replayed_dead_letter_is_labelled_once(stack: Stack, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    worker = stack.start_worker()  # loads its model while the dead letters are written
    text = orjson.dumps({"id": "mail-1", "text": NEWS[1]})
    asyncio.run(write_dead_letters(stack, [
        # A model failure (e.g. of a version since replaced): the input itself is fine.
        Rejected.of(RawRecord(text, b"mail-1", Source(stack.raw, 3, 17), headers=(("trace", b"t-1"),)),
                    "model_error", "the model failed on this input: ValueError: boom"),
        Rejected.of(RawRecord(b"{not json", None, Source(stack.raw, 1, 4)), "invalid_json", "unexpected character"),
    ]))
    for name, value in stack.env().items():
        monkeypatch.setenv(name, value)

    def replay(*flags: str) -> tuple[str, str]:
        assert main(["dlq", "replay", "--reason", "model_error", *flags]) == 0
        out = capsys.readouterr()
        return out.out, out.err

    out, err = replay("--dry-run")
    assert "would send" in out and "mail-1" in out and "invalid_json" not in out
    assert "would replay 1 dead letters" in err
    out, err = replay()
    assert "replayed 1 dead letters" in err and "0 already replayed" in err

    stack.wait_ready(worker)
    labeled = stack.read([stack.labeled], 1, settle=1.0)
    assert [orjson.loads(r.value or b"")["id"] for r in labeled] == ["mail-1"], stack.logs()

    out, err = replay()  # the same replay again: the ledger says it was done
    assert "replayed 0 dead letters" in err and "1 already replayed" in err and "already replayed" in out
    sent = asyncio.run(read_topic(stack.bootstrap, stack.raw))
    assert len(sent) == 1  # sent once: the original value, key and headers, plus the marker
    (rec,) = sent
    assert rec.value == text and rec.key == b"mail-1"
    assert list(rec.headers) == [("trace", b"t-1"), (MARKER, f"{stack.dlq}:0:0".encode())]
    assert len(stack.read([stack.labeled], 1, settle=2.0)) == 1  # labelled once

"""One micro-batch, from raw records to the records to publish: decode -> predict -> route.

Pure and synchronous: the Faust shell runs `process` in the inference thread, and `worker.publish`
sends every `Outgoing` and only then acknowledges the input offsets.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from worker.bundle import Bundle
from worker.config import Settings
from worker.decode import decode_records
from worker.limits import Limits
from worker.predict import predict_each
from worker.records import BatchResult, RawRecord
from worker.route import review_floor, route


def process(bundle: Bundle, settings: Settings, records: Sequence[RawRecord]) -> BatchResult:
    """Decode, label and route every record; each input yields output on texts.labeled or texts.dlq.
    The texts are built from `bundle`'s text fields: the version that labels the batch decodes it."""
    valid, rejected = decode_records(records, Limits.of(settings), received_at=time.time(),
                                     text_fields=bundle.text_fields)
    predictions = predict_each(bundle, [msg for _, msg in valid],
                               settings.explain_tokens if settings.explain else None,
                               floor=review_floor(settings, bundle.labels), every_text=settings.lstm == "always")
    labelled = ((rec, msg, pred) for (rec, msg), pred in zip(valid, predictions, strict=True))
    return route(settings, bundle.version, labelled, rejected, processed_at=time.time())

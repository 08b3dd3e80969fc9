from __future__ import annotations

import re

from worker.topics import label_topic


def test_label_topics_are_valid_kafka_names() -> None:
    assert label_topic("texts.label.", "sport") == "texts.label.sport"
    assert label_topic("texts.label.", "Sci/Tech") == "texts.label.Sci_Tech"
    assert label_topic("texts.label.", "体育") == "texts.label.u4f53u80b2"
    for label in ["a b", "体育", "x/y", "ok-1.2_3", "é"]:
        assert re.fullmatch(r"[A-Za-z0-9._-]+", label_topic("p.", label))


def test_distinct_non_ascii_labels_get_distinct_topics() -> None:
    labels = ["体育", "教育", "财经", "股票"]
    assert len({label_topic("p.", x) for x in labels}) == len(labels)

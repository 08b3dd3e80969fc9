"""Training settings: the text fields flag (the other settings are checked where they are used)."""

from __future__ import annotations

import pytest

from commands.main import build_parser
from commands.train import train_config
from training.config import TrainConfig
from worker.errors import ConfigError


def test_text_field_takes_one_field_or_several_separated_by_commas() -> None:
    assert TrainConfig().text_fields == ("text",)
    parser = build_parser()
    args = parser.parse_args(["train", "--data", "d.jsonl", "--text-field", "subject,body"])
    assert train_config(args).text_fields == ("subject", "body")
    args = parser.parse_args(["train", "--data", "d.jsonl"])
    assert train_config(args).text_fields == ("text",)


@pytest.mark.parametrize("spec", ["subject,,body", "body,body", ","])
def test_a_bad_field_list_is_refused_naming_the_flag(spec: str) -> None:
    args = build_parser().parse_args(["train", "--data", "d.jsonl", "--text-field", spec])
    with pytest.raises(ConfigError, match="--text-field"):
        train_config(args)

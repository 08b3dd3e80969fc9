"""Every training setting, in one validated, frozen object per part (importing this module does not
load TensorFlow).

`textstream train` derives its flags from these fields: a field with a `flag` is a command-line
option whose default, type, choices and help come from here, so a setting is written once. Fields
without one are tuning constants that only code (tests, benchmarks) sets.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from worker import textfields
from worker.config import validation_problems
from worker.errors import ConfigError

ClassWeight = Literal["auto", "balanced", "none"]
BadRows = Literal["skip", "fail"]
Align = Literal["auto", "always", "never"]


def flag(name: str, group: str) -> dict[str, Any]:
    """Marks a field as the command-line option `name` in the help group `group`."""
    return {"flag": name, "group": group}


class _Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ClassifierConfig(_Settings):
    epochs: int = Field(12, ge=1, le=1000, description="most LSTM epochs (early stopping on validation loss)",
                        json_schema_extra=flag("--epochs", "classifier"))
    patience: int = Field(2, ge=0, le=100, description="epochs without validation improvement",
                          json_schema_extra=flag("--patience", "classifier"))
    batch_size: int = Field(64, ge=1, le=65_536, description="LSTM batch size",
                            json_schema_extra=flag("--batch-size", "classifier"))
    learning_rate: float = Field(2e-3, gt=0, le=1, description="LSTM branch",
                                 json_schema_extra=flag("--learning-rate", "classifier"))
    validation_fraction: float = Field(0.1, gt=0, lt=1,
                                       description="of the training texts, for early stopping and weighing the branches",
                                       json_schema_extra=flag("--validation-fraction", "classifier"))
    vocab_size: int = Field(20_000, ge=10, le=10_000_000, description="LSTM vocabulary",
                            json_schema_extra=flag("--vocab-size", "classifier"))
    sequence_length: int = Field(256, ge=1, le=100_000, description="tokens per text for the LSTM",
                                 json_schema_extra=flag("--sequence-length", "classifier"))
    head_fraction: float = Field(0.75, ge=0, le=1,
                                 description="of a long text's tokens taken from its start (the rest from its end)",
                                 json_schema_extra=flag("--head-fraction", "classifier"))
    embedding_dim: int = Field(64, ge=1, le=4096, description="token embedding size",
                               json_schema_extra=flag("--embedding-dim", "classifier"))
    lstm_units: int = Field(64, ge=1, le=4096, description="LSTM units per direction",
                            json_schema_extra=flag("--lstm-units", "classifier"))
    bidirectional: bool = Field(True, description="read each text in both directions",
                                json_schema_extra=flag("--bidirectional", "classifier"))
    dropout: float = Field(0.3, ge=0, lt=1, description="on the pooled LSTM states",
                           json_schema_extra=flag("--dropout", "classifier"))
    ngram_vocab: int = Field(200_000, ge=0, le=100_000_000, description="n-gram (linear SVM) branch size; 0: LSTM only",
                             json_schema_extra=flag("--ngram-vocab", "classifier"))
    ngrams: int = Field(0, ge=0, le=10, description="n-gram order; 0: 2 (words), or 3 (characters) for CJK text",
                        json_schema_extra=flag("--ngrams", "classifier"))
    wide_c: float = Field(1.0, gt=0, description="C of the n-gram branch's linear SVM (inverse regularisation)",
                          json_schema_extra=flag("--svm-c", "classifier"))
    class_weight: ClassWeight = Field("auto", description="class weights of both branches; auto: balanced when "
                                                          "the largest class is 3x the smallest",
                                      json_schema_extra=flag("--class-weight", "classifier"))


class ClustererConfig(_Settings):
    n_clusters: int | None = Field(None, ge=1, le=100_000, description="default: the number of labels",
                                   json_schema_extra=flag("--n-clusters", "clusterer"))
    vocab_size: int = Field(20_000, ge=10, le=10_000_000, description="TF-IDF terms",
                            json_schema_extra=flag("--cluster-vocab", "clusterer"))
    ngrams: int = Field(0, ge=0, le=10, description="0 = auto: word unigrams, or character 1-2-grams for CJK text")
    latent_dim: int = Field(50, ge=1, le=4096, description="embedding size",
                            json_schema_extra=flag("--latent-dim", "clusterer"))
    ae_epochs: int = Field(2, ge=0, le=1000, description="autoencoder fine-tuning epochs",
                           json_schema_extra=flag("--ae-epochs", "clusterer"))
    ae_learning_rate: float = Field(1e-4, gt=0, le=1)
    kmeans_inits: int = Field(20, ge=1, le=1000)
    dec_iterations: int = Field(10, ge=0, le=10_000, description="DEC target updates (0: k-means only)",
                                json_schema_extra=flag("--dec-iterations", "clusterer"))
    # First DEC target = the k-means partition (else DEC starts from the cosine assignment);
    # auto: when k-means found clusters of very different sizes (largest ≥ 3x smallest).
    align: Align = "auto"
    dec_learning_rate: float = Field(1e-3, gt=0, le=1)
    dec_tolerance: float = Field(0.001, ge=0, le=1, description="stop when fewer than this share of texts change cluster")
    dec_balance: float = Field(0.5, ge=0, le=1, description="DEC's pull towards equal-size clusters (1: original DEC, 0: none)",
                               json_schema_extra=flag("--dec-balance", "clusterer"))
    sharpness: float = Field(10.0, gt=0, description="Student-t kernel 1 / (1 + s·|z - μ|²) on unit vectors")
    batch_size: int = Field(256, ge=1, le=65_536)


class TrainConfig(_Settings):
    classifier: ClassifierConfig = ClassifierConfig()
    clusterer: ClustererConfig = ClustererConfig()
    text_field: str = Field("text", min_length=1,
                            description="JSON field / CSV column with the text, or several separated by commas "
                                        "(subject,body): their non-empty values joined by a blank line; the "
                                        "version records them and workers build each record's text the same way",
                            json_schema_extra=flag("--text-field", "data"))
    label_field: str = Field("label", min_length=1, description="JSON field / CSV column with the label",
                             json_schema_extra=flag("--label-field", "data"))
    bad_rows: BadRows = Field("skip", description="unreadable rows: skip them (reported with line numbers) or fail",
                              json_schema_extra=flag("--bad-rows", "data"))
    test_size: float = Field(0.15, gt=0, lt=1, description="share held out for evaluation",
                             json_schema_extra=flag("--test-size", "data"))
    max_rows: int | None = Field(None, ge=2, description="train on a stratified sample of this many rows",
                                 json_schema_extra=flag("--max-rows", "data"))
    seed: int = Field(42, ge=0, description="for splits, initial weights and k-means",
                      json_schema_extra=flag("--seed", "data"))
    gate_tolerance: float = Field(0.01, ge=0, le=1, description="publish only if macro-F1 >= the served version's "
                                                                "(on the same texts) minus this",
                                  json_schema_extra=flag("--gate-tolerance", "quality gate"))
    force: bool = Field(False, description="publish even if the quality gate refuses",
                        json_schema_extra=flag("--force", "quality gate"))
    # The clusterer never sees labels, so it may learn from the evaluation texts too, as the
    # LSA + k-means baseline does; the classifier never sees them.
    cluster_eval_texts: bool = True

    @field_validator("text_field")
    @classmethod
    def _fields_parse(cls, value: str) -> str:
        textfields.parse(value)  # raises ValueError saying what is wrong
        return value

    @property
    def text_fields(self) -> tuple[str, ...]:
        """The input fields the text is made of, in order (worker/textfields.py)."""
        return textfields.parse(self.text_field)


def build(classifier: dict[str, Any], clusterer: dict[str, Any], **train: Any) -> TrainConfig:
    """A TrainConfig from plain values (the command's flags); ConfigError names each bad flag."""
    parts = {"classifier": (ClassifierConfig, classifier), "clusterer": (ClustererConfig, clusterer)}
    built: dict[str, Any] = {}
    problems: list[str] = []
    for part, (cls, values) in parts.items():
        try:
            built[part] = cls(**values)
        except ValidationError as exc:
            problems += validation_problems(exc, lambda field, cls=cls: _flag_of(cls, field))  # type: ignore[misc]
    try:
        config = TrainConfig(**built, **train) if not problems else None
    except ValidationError as exc:
        problems += validation_problems(exc, lambda field: _flag_of(TrainConfig, field))
    if problems or config is None:
        raise ConfigError("invalid training settings:\n  " + "\n  ".join(problems))
    return config


def _flag_of(cls: type[BaseModel], field: str) -> str:
    info = cls.model_fields.get(field)
    extra = info.json_schema_extra if info is not None else None
    return str(extra["flag"]) if isinstance(extra, dict) and "flag" in extra else field

"""One exception root for the project; leaves are narrow so callers can catch exactly what they handle."""

from __future__ import annotations


class TextstreamError(Exception):
    """Base of every error textstream raises on purpose."""


class ConfigError(TextstreamError):
    """A TEXTSTREAM_* setting is missing or invalid."""


class RegistryError(TextstreamError):
    """The model registry is empty, unreadable or inconsistent."""


class BundleError(TextstreamError):
    """A model version failed verification or loading."""


class DataError(TextstreamError):
    """Training data is missing, empty or unusable."""

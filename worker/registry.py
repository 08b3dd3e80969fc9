"""The model registry: integer version folders, each one composite artefact with a manifest.

Layout (TF Serving's contract plus a manifest):
    <root>/3/manifest.json, classifier.keras, encoder.keras, centroids.npy
    <root>/.staging-<uuid>/   being written; never loaded (not an integer name)

A version appears atomically: it is written and fsync'd under a staging name, then renamed to the
next integer (rename is atomic on one filesystem, and fails if the name is already taken, so two
trainers publishing at once get different numbers).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from worker.errors import BundleError, RegistryError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 1
STAGING_PREFIX = ".staging-"
PIN_FILE = "PINNED"  # holds one version number; overrides "highest version wins"


def versions(root: Path) -> list[int]:
    """Published versions, ascending. Non-numeric entries (staging, notes) are ignored."""
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        if entry.name.isdigit() and entry.is_dir() and (entry / MANIFEST).is_file():
            found.append(int(entry.name))
    return sorted(found)


def latest_version(root: Path) -> int:
    """The version a worker should serve: the highest one."""
    found = versions(root)
    if not found:
        raise RegistryError(
            f"no model version in {root.resolve()}: train one with "
            f"`textstream train --data FILE --model-dir {root}`"
        )
    return found[-1]


def pinned(root: Path) -> int | None:
    """The pinned version, or None when nothing is pinned."""
    try:
        text = (root / PIN_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    if not text.isdigit():
        raise RegistryError(f"{root / PIN_FILE} must hold a version number, holds {text[:40]!r}")
    return int(text)


def serving_version(root: Path) -> int:
    """The version workers should serve: the pinned one if any, else the highest."""
    pin_ = pinned(root)
    if pin_ is None:
        return latest_version(root)
    if pin_ not in versions(root):
        raise RegistryError(f"{root} is pinned to version {pin_}, which does not exist")
    return pin_


def pin(root: Path, version: int) -> None:
    """Pin workers to `version` (atomically: write a temporary file, then rename it)."""
    if version not in versions(root):
        raise RegistryError(f"cannot pin {root} to version {version}: it does not exist (have {versions(root)})")
    tmp = root / f".{PIN_FILE}.{uuid.uuid4().hex}"
    tmp.write_text(f"{version}\n")
    _fsync(tmp)
    tmp.rename(root / PIN_FILE)
    _fsync(root)
    logger.info("pinned %s to version %d", root, version)


def unpin(root: Path) -> bool:
    """Remove the pin; returns False if there was none."""
    try:
        (root / PIN_FILE).unlink()
    except FileNotFoundError:
        return False
    _fsync(root)
    logger.info("unpinned %s", root)
    return True


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _payload_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    target = folder / MANIFEST
    target.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    _fsync(target)


def publish(root: Path, build: Callable[[Path], dict[str, Any]]) -> int:
    """Write a new version with `build(staging_dir) -> manifest fields` and make it visible atomically.

    Returns the published version number. If `build` fails, nothing becomes visible.
    """
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        fields = build(staging)
        files = {str(p.relative_to(staging)): sha256_file(p) for p in _payload_files(staging)}
        for path in _payload_files(staging):
            _fsync(path)
        version = (versions(root) or [0])[-1] + 1
        while True:
            manifest = {
                "format": FORMAT,
                "version": version,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **fields,
                "files": files,
            }
            _write_manifest(staging, manifest)
            _fsync(staging)
            try:
                staging.rename(root / str(version))
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                version += 1  # another publisher took this number first
                continue
            _fsync(root)
            logger.info("published version=%d path=%s", version, root / str(version))
            return version
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def read_manifest(folder: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = orjson.loads((folder / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise BundleError(f"{folder}: no {MANIFEST}") from None
    except orjson.JSONDecodeError as exc:
        raise BundleError(f"{folder}/{MANIFEST}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{folder}/{MANIFEST}: unknown manifest format {manifest.get('format')!r}")
    return manifest


def verify(folder: Path) -> dict[str, Any]:
    """Check every file hash in the manifest and that the version matches the folder name."""
    manifest = read_manifest(folder)
    if str(manifest.get("version")) != folder.name:
        raise BundleError(f"{folder}: manifest says version {manifest.get('version')!r}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{folder}/{MANIFEST}: lists no files")
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            raise BundleError(f"{folder}: {name} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(f"{folder}: sha256 of {name} is {actual[:12]}…, manifest says {expected[:12]}…")
    return manifest


def describe(root: Path) -> list[dict[str, Any]]:
    """Every published version's manifest (ascending), with `serving`, `pinned` and `size_bytes` added.

    A version whose manifest cannot be read is listed with an `error` instead of failing the listing.
    """
    found = versions(root)
    if not found:
        return []
    pin_ = pinned(root)
    serving = pin_ if pin_ in found else found[-1]
    out: list[dict[str, Any]] = []
    for version in found:
        folder = root / str(version)
        try:
            entry = read_manifest(folder)
        except BundleError as exc:
            entry = {"version": version, "error": str(exc)}
        entry.update(
            version=version, serving=version == serving, pinned=version == pin_,
            size_bytes=sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()),
        )
        out.append(entry)
    return out


def rollback(root: Path) -> int:
    """Pin the highest version below the one being served; returns it."""
    current = serving_version(root)
    older = [v for v in versions(root) if v < current]
    if not older:
        raise RegistryError(f"cannot roll back {root}: version {current} is the oldest one")
    pin(root, older[-1])
    return older[-1]


def remove(root: Path, version: int) -> None:
    """Delete a version that is not pinned: renamed out of sight first (atomic), then deleted."""
    if version == pinned(root):
        raise RegistryError(f"version {version} is pinned; unpin or pin another version before removing it")
    folder = root / str(version)
    if version not in versions(root):
        raise RegistryError(f"{folder} is not a published version")
    trash = root / f"{STAGING_PREFIX}removed-{version}-{uuid.uuid4().hex}"
    folder.rename(trash)
    _fsync(root)
    shutil.rmtree(trash, ignore_errors=True)
    logger.info("removed version %d from %s", version, root)


def prunable(root: Path, keep: int) -> list[int]:
    """Versions `prune(root, keep)` would remove: all but the newest `keep` and the served one."""
    if keep < 1:
        raise RegistryError(f"keep must be at least 1, got {keep}")
    found = versions(root)
    spared = set(found[-keep:]) | ({serving_version(root)} if found else set())
    return [v for v in found if v not in spared]


def prune(root: Path, keep: int) -> list[int]:
    """Remove every version except the newest `keep` and the one being served; returns the removed."""
    removed = prunable(root, keep)
    for version in removed:
        remove(root, version)
    return removed


def describe_mix(weights: dict[str, Any]) -> str:
    """A manifest's branch weights in words ('' when it has none)."""
    if "lstm_weight" not in weights:
        return ""
    bound = weights.get("lstm_bound")
    bounded = f", LSTM log-probabilities bounded at -{bound:g}" if isinstance(bound, float | int) and bound < 1e6 else ""
    return f"LSTM weight {weights['lstm_weight']}, n-gram weight {weights['ngram_weight']}{bounded}"

"""`textstream models list|show|pin|unpin|rollback|prune|status`: the registry seen and handled from a
shell, and the running workers' view of it."""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from commands import clients
from worker import config, events, registry, security, topics
from worker.errors import RegistryError


def model_dir(args: argparse.Namespace) -> Path:
    """--model-dir, else TEXTSTREAM_MODEL_DIR (the worker's setting), else ./models."""
    return Path(args.model_dir) if args.model_dir is not None else config.load_settings().model_dir


def _json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _fmt(x: object) -> str:
    return f"{x:.4f}" if isinstance(x, float) else "–" if x is None else str(x)


def _state(entry: dict[str, Any]) -> str:
    return "pinned" if entry["pinned"] else "serving" if entry["serving"] else ""


def list_table(entries: list[dict[str, Any]]) -> str:
    header = ["version", "created", "state", "accuracy", "macro_f1", "nmi", "labels", "rows", "size"]
    rows = []
    for e in entries:
        m = e.get("metrics") or {}
        rows.append([str(e["version"]), str(e.get("created_at", "?")), _state(e), _fmt(m.get("accuracy")),
                     _fmt(m.get("macro_f1")), _fmt(m.get("nmi")), str(len(e.get("labels") or [])) if "labels" in e else "?",
                     str((e.get("data") or {}).get("rows", "?")), _size(e["size_bytes"])])
        if "error" in e:
            rows[-1][2] = "unreadable"
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    right = {0, 3, 4, 5, 6, 7, 8}
    lines = []
    for r in [header, *rows]:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def show_text(root: Path, e: dict[str, Any]) -> str:
    if "error" in e:
        return f"version {e['version']}: {e['error']}"
    data, m = e.get("data") or {}, e.get("metrics") or {}
    ev = e.get("evaluation") or {}
    lines = [
        f"version {e['version']} ({_state(e) or 'not served'}), created {e.get('created_at', '?')}, {_size(e['size_bytes'])}",
        f"path:       {root / str(e['version'])}",
        f"labels:     {', '.join(e.get('labels', []))}",
        f"clusters:   {e.get('n_clusters')} (embedding dim {e.get('embedding_dim')})",
        f"data:       {', '.join(data.get('sources', []))}",
        f"rows:       {data.get('rows')} ({data.get('train_rows')} train, {data.get('eval_rows')} evaluation, "
        f"{data.get('skipped')} skipped)",
        "metrics:    " + "  ".join(f"{k} {_fmt(v)}" for k, v in m.items()),
    ]
    weights = ev.get("branch_weights") or {}
    if weights:
        lines.append(f"classifier: {registry.describe_mix(weights)}")
    per_class = (ev.get("classification") or {}).get("per_class") or {}
    if per_class:
        width = max(len(k) for k in per_class)
        lines.append(f"\n  {'class':<{width}}  precision  recall      f1  support")
        for name, v in per_class.items():
            lines.append(f"  {name:<{width}}  {v['precision']:>9.4f}  {v['recall']:>6.4f}  {v['f1']:>6.4f}  {v['support']:>7}")
    terms = e.get("cluster_terms") or []
    if terms:
        lines.append("\n  cluster  top terms")
        lines += [f"  {i:>7}  {', '.join(t) or '-'}" for i, t in enumerate(terms)]
    ids = (ev.get("clustering") or {}).get("cluster_ids") or {}
    if ids.get("matched_to_version") is not None:
        lines.append(f"cluster ids: matched to version {ids['matched_to_version']}'s; "
                     f"{100 * ids['changed_share']:.1f}% of {ids['texts']} training texts changed id")
    gate = e.get("gate") or {}
    if gate:
        against = (f"version {gate.get('current_version')} {_fmt(gate.get('current_f1'))}"
                   if gate.get("current_f1") is not None else "nothing")
        lines.append(f"\ngate:       macro-F1 {_fmt(gate.get('new_f1'))} vs {against}, tolerance {gate.get('tolerance')}"
                     f"{', forced' if gate.get('forced') else ''}")
    report = root / str(e["version"]) / "report" / "report.md"
    if report.is_file():
        lines.append(f"report:     {report}")
    return "\n".join(lines)


def announce(args: argparse.Namespace, event: dict[str, Any]) -> None:
    """Tell running workers on TEXTSTREAM_MODELS_TOPIC; they also poll, so a missing broker only delays them."""
    if getattr(args, "announce", True):
        settings = clients.kafka_settings(args)
        events.notify(settings.bootstrap_servers, settings.models_topic, {**event, "registry": str(args.model_dir)},
                      security=security.from_settings(settings), spec=topics.TopicSpec.from_settings(settings))


def worker_status(url: str) -> dict[str, Any]:
    """A running worker's /status, or what went wrong asking for it."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/status", timeout=5) as resp:
            body: dict[str, Any] = orjson.loads(resp.read())
    except (urllib.error.URLError, OSError, orjson.JSONDecodeError) as exc:
        return {"worker": url, "error": str(getattr(exc, "reason", exc))}
    return {"worker": url, **body}


def status_table(rows: list[dict[str, Any]]) -> str:
    def when(ts: object) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if isinstance(ts, int | float) else "–"

    lines = [f"{'worker':<28} {'version':>7}  {'loaded at':<19} {'load s':>6} {'reloads ok/failed':>17}  last reload error"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['worker']:<28} {'?':>7}  unreachable: {r['error']}")
            continue
        reloads = r.get("reloads", {})
        lines.append(f"{r['worker']:<28} {_fmt(r.get('model_version')):>7}  {when(r.get('loaded_at')):<19} "
                     f"{r.get('load_seconds', 0):>6.2f} {reloads.get('success', 0):>8}/{reloads.get('failure', 0):<8}  "
                     f"{r.get('last_error') or '–'}")
    return "\n".join(lines)


def cmd_models(args: argparse.Namespace) -> int:
    root = args.model_dir = model_dir(args)
    action = args.action
    if action == "status":
        urls = args.worker or [f"http://127.0.0.1:{config.load_settings().web_port}"]
        rows = [worker_status(url) for url in urls]
        _json(rows) if args.json else print(status_table(rows))
        return 0 if all("error" not in r for r in rows) else 1
    if action == "list":
        entries = registry.describe(root)
        if args.json:
            _json(entries)
        elif not entries:
            print(f"no model version in {root}")
        else:
            pin_ = registry.pinned(root)
            print(f"registry {root}: serving version {registry.serving_version(root)}"
                  f"{' (pinned)' if pin_ is not None else ' (highest)'}\n")
            print(list_table(entries))
    elif action == "show":
        by_version = {e["version"]: e for e in registry.describe(root)}
        version = args.version if args.version is not None else registry.serving_version(root)
        if version not in by_version:
            raise RegistryError(f"no version {version} in {root} (have {sorted(by_version)})")
        _json(by_version[version]) if args.json else print(show_text(root, by_version[version]))
    elif action == "pin":
        if args.version is None:
            raise RegistryError("pin needs a version: textstream models pin VERSION")
        registry.pin(root, args.version)
        announce(args, {"event": "pinned", "version": args.version})
        _report(args, {"pinned": args.version}, f"pinned {root} to version {args.version}; workers serve it")
    elif action == "unpin":
        had = registry.unpin(root)
        announce(args, {"event": "unpinned"})
        serving = registry.serving_version(root) if registry.versions(root) else None
        _report(args, {"unpinned": had, "serving": serving},
                f"{'removed the pin' if had else 'nothing was pinned'}; workers serve the highest version ({serving})")
    elif action == "rollback":
        before = registry.serving_version(root)
        after = registry.rollback(root)
        announce(args, {"event": "rolled_back", "version": after})
        _report(args, {"from": before, "pinned": after},
                f"rolled back {root} from version {before} to {after} (pinned; `textstream models unpin` to undo)")
    elif action == "prune":
        victims = registry.prunable(root, args.keep) if args.dry_run else registry.prune(root, args.keep)
        verb = "would remove" if args.dry_run else "removed"
        _report(args, {"removed": [] if args.dry_run else victims, "would_remove": victims if args.dry_run else []},
                f"{verb} versions {victims}" if victims else "nothing to remove")
    return 0


def _report(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    _json(payload) if args.json else print(text)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "models", help="list, inspect, pin, roll back and prune model versions; see what workers serve",
        description="Operate the model registry. Workers serve the pinned version if any, else the highest. "
                    "rollback pins the highest version below the one being served; prune keeps the newest "
                    "--keep versions and always the one being served. pin, unpin and rollback announce the "
                    "change on TEXTSTREAM_MODELS_TOPIC so running workers reload at once. status asks running "
                    "workers (--worker URL) which version they serve, since when, and their last reload error.",
    )
    p.add_argument("action", choices=["list", "show", "pin", "unpin", "rollback", "prune", "status"])
    p.add_argument("version", nargs="?", type=int, help="for show (default: the served version) and pin")
    p.add_argument("--model-dir", type=Path, help="model registry (default: TEXTSTREAM_MODEL_DIR or ./models)")
    p.add_argument("--keep", type=int, default=3, help="prune: how many of the newest versions to keep (default 3)")
    p.add_argument("--dry-run", action="store_true", help="prune: only say what would be removed")
    p.add_argument("--worker", action="append", metavar="URL",
                   help="status: a worker's HTTP address (repeatable; default http://127.0.0.1:TEXTSTREAM_WEB_PORT)")
    p.add_argument("--no-announce", dest="announce", action="store_false",
                   help="pin/unpin/rollback: do not announce the change on TEXTSTREAM_MODELS_TOPIC")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    clients.add_command_config(p)
    p.set_defaults(func=cmd_models)

"""Monitoring files in deploy/: Prometheus config and alert rules (checked and unit-tested by
promtool), the Grafana dashboard and its provisioning, and every PromQL expression in them checked
against the metrics the worker really exports (worker/metrics.py, Faust's sensor, Prometheus' `up`).

promtool comes from Debian's `prometheus` package. A missing promtool FAILS these tests (CI must
install it: apt-get install -y --no-install-recommends prometheus); nothing here is skipped.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.utils import floatToGoString

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "textstream.json"
WORKER_JOB = "textstream-worker"

# Grafana's interval variables, replaced by a duration so the expression is plain PromQL, and the
# dashboard's own `$job` at its default (checked in test_the_dashboard_selects_the_job_by_its_variable).
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$job": WORKER_JOB}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: install Debian's prometheus package "
                    "(apt-get install -y --no-install-recommends prometheus)")
    return path


def run_promtool(*args: str, cwd: Path = PROMETHEUS) -> str:
    proc = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


# --- what the worker exports --------------------------------------------------------------------

def _families(registry: CollectorRegistry) -> dict[str, set[str]]:
    """Every series name a scrape of `registry` can return, with the label names it can carry."""
    # Label names of labelled metrics that have no child yet are only known to the collector
    # object (collect() yields no sample for them): prometheus_client keeps them in _labelnames.
    declared: dict[str, set[str]] = {}
    for collector in list(registry._collector_to_names):
        for name in registry._collector_to_names[collector]:
            declared.setdefault(name, set()).update(getattr(collector, "_labelnames", ()))
    names: dict[str, set[str]] = {}
    for family in registry.collect():
        labels = declared.get(family.name, set()) | {k for s in family.samples for k in s.labels}
        suffixes = {
            "counter": ["_total", "_created"],
            "histogram": ["_bucket", "_sum", "_count", "_created"],
            "summary": ["", "_sum", "_count", "_created"],
            "gaugehistogram": ["_bucket", "_gsum", "_gcount"],
            "info": ["_info"],
        }.get(family.type, [""])
        for suffix in suffixes:
            names[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


def exported_metrics() -> dict[str, set[str]]:
    """Series names (with label names, target labels included) that a worker or trainer scrape can hold."""
    from faust.sensors.prometheus import FaustMetrics

    import training.trainer  # noqa: F401  registers the textstream_trainer_* metrics in REGISTRY
    import worker.metrics  # noqa: F401  registers the textstream_* metrics in REGISTRY

    names = _families(REGISTRY)
    # worker/app.py calls setup_prometheus_sensors(app, name_prefix="faust"): the same metrics,
    # created here in a registry of their own so this test needs no running app.
    faust_registry = CollectorRegistry()
    FaustMetrics.create(faust_registry, "faust")
    names.update(_families(faust_registry))
    names["up"] = set()  # written by Prometheus for every target
    return {name: labels | {"job", "instance"} for name, labels in names.items()}


def known_label_values() -> dict[tuple[str, str], set[str]]:
    """Closed sets of label values that an `=` matcher must pick from (a typo matches nothing)."""
    from worker import metrics
    from worker.records import REASONS

    values: dict[tuple[str, str], set[str]] = {
        # worker/metrics.py observe_batch and worker/reload.py write these.
        ("textstream_messages_total", "outcome"): {"labeled", "dead_lettered"},
        ("textstream_messages_total", "reason"): {"", *REASONS},
        ("textstream_model_reloads_total", "result"): {"success", "failure"},
        # training/trainer.py writes these.
        ("textstream_trainer_trainings_total", "outcome"): {"published", "refused", "failed"},
        ("textstream_trainer_corrections_total", "outcome"): {"stored", "dead_lettered"},
    }
    for name, obj in vars(metrics).items():
        bounds = getattr(obj, "_upper_bounds", None)  # histogram buckets, as the exposition writes them
        if bounds is not None and not name.startswith("_"):
            values[(obj._name + "_bucket", "le")] = {floatToGoString(b) for b in bounds}
    return values


# --- PromQL, just enough of it ------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)?\s*\{([^{}]*)\}")
_MATCHER = re.compile(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')')
_BRACKETS = re.compile(r"\[[^\]]*\]")  # range vectors and subqueries
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# An identifier not glued to a digit, a dot or a `$` (so not `5m`, `1e3`, or a Grafana variable).
_IDENT = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
             "and", "or", "unless", "inf", "nan", "atan2"}


def plain_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(metric name, [(label, operator, value)]) for every `name{...}` selector."""
    found = []
    for match in _SELECTOR.finditer(plain_promql(expr)):
        matchers = [(m[0], m[1], m[2][1:-1]) for m in _MATCHER.findall(match[2])]
        found.append((match[1] or "", matchers))
    return found


def metric_names(expr: str) -> set[str]:
    """Metric names an expression reads: identifiers that are not functions, keywords or labels."""
    text = _SELECTOR.sub(lambda m: m[1] or "", plain_promql(expr))
    text = _BRACKETS.sub("", _STRING.sub('""', text))
    text = _GROUPING.sub("", text)
    return {m[1] for m in _IDENT.finditer(text) if not m[2] and m[1] not in _KEYWORDS}


@pytest.mark.parametrize(("expr", "names"), [
    ('histogram_quantile(0.95, sum by (le) (rate(a_bucket{job="x", le!="+Inf"}[$__rate_interval])))', {"a_bucket"}),
    ("sum(rate(b_total[5m] offset 1h)) by (job) / on (job) group_left(instance) c > 1e3", {"b_total", "c"}),
    ("up == 1 unless on (job, instance) d or absent(e{x=~'a|b'}) and bool f", {"up", "d", "e", "f"}),
    ("time() - max_over_time(g:rec:sum[1h:5m]) > inf", {"g:rec:sum"}),
])
def test_promql_name_extraction(expr: str, names: set[str]) -> None:
    # The checks below are only as good as this extraction; pin its behaviour on hard cases.
    assert metric_names(expr) == names


# --- sources of PromQL --------------------------------------------------------------------------

def load_yaml(path: Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = load_yaml(PROMETHEUS / "alerts.yml")["groups"]
    return groups


def alert_expressions() -> list[tuple[str, str]]:
    return [(rule.get("alert") or rule["record"], rule["expr"]) for g in rule_groups() for rule in g["rules"]]


def recorded_names() -> set[str]:
    return {rule["record"] for g in rule_groups() for rule in g["rules"] if "record" in rule}


def load_dashboard() -> dict[str, Any]:
    with DASHBOARD.open() as f:
        dashboard: dict[str, Any] = json.load(f)
    return dashboard


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # panels inside collapsed rows
    return panels


def dashboard_expressions() -> list[tuple[str, str]]:
    dashboard = load_dashboard()
    exprs = [(f"{p['title']} [{t['refId']}]", t["expr"]) for p in all_panels(dashboard) for t in p.get("targets", [])]
    exprs += [(f"annotation {a['name']}", a["expr"]) for a in dashboard.get("annotations", {}).get("list", [])
              if a.get("expr")]
    return exprs


# --- Prometheus ---------------------------------------------------------------------------------

def test_prometheus_config_is_valid() -> None:
    # Also checks every rule file the config names.
    run_promtool("check", "config", "prometheus.yml")


def test_alert_rules_are_valid() -> None:
    run_promtool("check", "rules", "alerts.yml")


def test_alert_rules_pass_their_unit_tests() -> None:
    output = run_promtool("test", "rules", "alerts_test.yml")
    assert "SUCCESS" in output


def test_every_alert_is_unit_tested() -> None:
    alerts = {rule["alert"] for g in rule_groups() for rule in g["rules"] if "alert" in rule}
    assert alerts == {
        "TextstreamWorkerDown", "TextstreamNoWorkerUp", "TextstreamNoModel", "TextstreamDeadLetterRateHigh",
        "TextstreamConsumerLagGrowing", "TextstreamModelReloadFailed", "TextstreamConfidenceDrift",
        "TextstreamTrainerTrainingFailed", "TextstreamTrainerGateRefusing",
    }
    tests = load_yaml(PROMETHEUS / "alerts_test.yml")["tests"]
    tested = [case for t in tests for case in t.get("alert_rule_test", [])]
    for alert in alerts:
        cases = [c for c in tested if c["alertname"] == alert]
        assert any(c["exp_alerts"] for c in cases), f"{alert}: no case where it fires"
        assert any(not c["exp_alerts"] for c in cases), f"{alert}: no case where it stays quiet"


def test_every_alert_has_severity_and_summary() -> None:
    for group in rule_groups():
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
                assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_prometheus_scrapes_the_worker_port_and_loads_the_rules() -> None:
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker = jobs[WORKER_JOB]
    assert worker.get("metrics_path", "/metrics") == "/metrics"
    from worker.config import Settings

    default_port = Settings.model_fields["web_port"].default
    assert [sd["port"] for sd in worker["dns_sd_configs"]] == [default_port]


# --- every PromQL expression names real metrics ---------------------------------------------------

def _check_expression(where: str, expr: str, allowed: dict[str, set[str]]) -> list[str]:
    problems = []
    names = metric_names(expr)
    if not names:
        problems.append(f"{where}: no metric found in {expr!r}")
    for name in sorted(names - set(allowed)):
        problems.append(f"{where}: {name} is not exported by the worker")
    values = known_label_values()
    for name, matchers in selectors(expr):
        if name not in allowed:
            continue
        for label, op, value in matchers:
            if label not in allowed[name]:
                problems.append(f"{where}: {name} has no label {label!r}")
            elif op == "=" and (name, label) in values and value not in values[(name, label)]:
                problems.append(f"{where}: {name}{{{label}={value!r}}} matches nothing "
                                f"(values: {sorted(values[(name, label)])})")
            elif label == "job" and op == "=" and value != WORKER_JOB:
                problems.append(f"{where}: job={value!r}, the scrape job is {WORKER_JOB!r}")
    return problems


def test_dashboard_queries_name_only_exported_metrics() -> None:
    allowed = exported_metrics()
    exprs = dashboard_expressions()
    problems = [p for where, expr in exprs for p in _check_expression(where, expr, allowed)]
    assert not problems, "\n".join(problems)
    used = set().union(*(metric_names(e) for _, e in exprs))
    # What the issue asks the dashboard to show; guards against a check that passes on nothing.
    assert used >= {
        "faust_messages_received_total", "textstream_messages_total", "textstream_end_to_end_seconds_bucket",
        "textstream_inference_seconds_bucket", "textstream_consumer_lag", "textstream_predictions_total",
        "textstream_confidence_bucket", "textstream_cluster_assignments_total", "textstream_model_version",
        "textstream_model_reloads_total",
    }


def test_the_dashboard_selects_the_job_by_its_variable() -> None:
    """A deployment whose scrape job has another name picks it in the dashboard's `job` variable."""
    [job] = [v for v in load_dashboard()["templating"]["list"] if v["name"] == "job"]
    assert job["type"] == "query" and job["query"]["query"] == "label_values(textstream_model_version, job)"
    assert job["current"]["value"] == WORKER_JOB and not job["multi"]
    matchers = [(where, m) for where, expr in dashboard_expressions()
                for m in re.findall(r'\bjob\s*(?:=~|!~|!=|=)\s*"[^"]*"', expr)]
    assert len(matchers) >= 40
    assert [(w, m) for w, m in matchers if m != 'job="$job"'] == []


def test_alert_rules_name_only_exported_metrics() -> None:
    # Alerts may also read the recording rules defined next to them (whose own expressions are checked).
    allowed = exported_metrics() | {name: {"job", "topic"} for name in recorded_names()}
    problems = [p for where, expr in alert_expressions() for p in _check_expression(where, expr, allowed)]
    assert not problems, "\n".join(problems)
    assert "textstream_confidence_bucket" in set().union(*(metric_names(e) for _, e in alert_expressions()))


def test_the_check_catches_a_misspelt_metric_or_label_value() -> None:
    allowed = exported_metrics()
    assert _check_expression("x", "rate(textstream_message_total[5m])", allowed)
    assert _check_expression("x", 'rate(textstream_messages_total{outcome="labelled"}[5m])', allowed)
    assert _check_expression("x", 'textstream_confidence_bucket{le="0.55"}', allowed)
    assert _check_expression("x", 'textstream_consumer_lag{partiton="0"}', allowed)
    assert not _check_expression("x", 'sum by (reason) (rate(textstream_messages_total{outcome="dead_lettered"}[5m]))', allowed)


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    # promtool has no "check expression"; a recording rule per query makes it parse each one.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": plain_promql(expr)} for i, (_, expr) in enumerate(dashboard_expressions())
    ]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    run_promtool("check", "rules", str(path), cwd=tmp_path)


# --- Grafana ------------------------------------------------------------------------------------

def test_dashboard_is_well_formed() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] and dashboard["title"]
    panels = all_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_dashboard_covers_what_operators_asked_for() -> None:
    titles = {p["title"] for p in all_panels(load_dashboard())}
    for wanted in ["Throughput in / out", "Latency percentiles", "Dead-lettered by reason", "Consumer lag by partition",
                   "Label mix over time", "Confidence distribution", "Cluster mix over time",
                   "Model version per worker", "Model reloads"]:
        assert wanted in titles


def test_grafana_provisioning_matches_the_dashboard() -> None:
    datasources = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    (prometheus,) = [d for d in datasources if d["type"] == "prometheus"]
    variable = {v["name"]: v for v in load_dashboard()["templating"]["list"]}["datasource"]
    assert variable["current"]["value"] == prometheus["uid"]
    assert prometheus["url"] == "http://prometheus:9090"  # the compose service name
    providers = load_yaml(GRAFANA / "provisioning" / "dashboards" / "textstream.yml")["providers"]
    assert [p["options"]["path"] for p in providers] == ["/var/lib/grafana/dashboards"]

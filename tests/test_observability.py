"""The Grafana dashboard and the Prometheus alert rules query only series the service exports
(service.metrics.Metrics, with Prometheus' _total/_bucket/_count/_sum suffixes) and labels
those series carry; the rules file has the structure Prometheus loads."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from cli_helpers import ROOT

from service.metrics import Metrics

DASHBOARD = ROOT / "docker" / "grafana" / "nsp-recall-dashboard.json"
ALERTS = ROOT / "docker" / "prometheus" / "alerts.yaml"
# Series from elsewhere, by name: kube-state-metrics (pod readiness).
EXTERNAL = {"kube_deployment_status_replicas_available"}
# Labels Prometheus adds at scrape time, or Prometheus-side names, not the service's.
TARGET_LABELS = {"job", "instance", "le", "deployment", "pid"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
KEYWORDS |= {"and", "or", "unless", "inf", "nan"}
SEVERITIES = {"critical", "warning", "info"}


def exported_series() -> dict[str, set[str]]:
    """Series name -> label names, for every series the service can export."""
    series: dict[str, set[str]] = {}
    for collector in Metrics().registry._collector_to_names:
        # Each metric object knows its type and label names even before any observation.
        name, kind = collector._name, collector._type
        labels = set(collector._labelnames)
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}[kind]
        for suffix in suffixes:
            series[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return series


def parse(expr: str) -> tuple[dict[str, set[str]], set[str]]:
    """({metric name: labels its selectors match on}, grouping labels). Enough PromQL for these
    files: selectors, by/without/on/ignoring lists, ranges, functions, Grafana variables."""
    expr = re.sub(r"\$\{?\w+\}?", "1m", expr)  # Grafana variables ($__rate_interval, $job)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    grouping: set[str] = set()
    for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        grouping |= {label.strip() for label in group.split(",") if label.strip()}
    expr = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    metrics: dict[str, set[str]] = {}
    for name, matchers in re.findall(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}", expr):
        metrics.setdefault(name, set()).update(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    bare = re.sub(r"\{[^}]*\}", "", expr)
    bare = re.sub(r"\[[^\]]*\]", "", bare)  # range selectors
    for token in re.findall(r"(?<![\w.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", bare):
        if token.lower() not in KEYWORDS:
            metrics.setdefault(token, set())
    return metrics, grouping


def dashboard_expressions() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in board["annotations"]["list"] if "expr" in a]
    exprs += [v["definition"] for v in board["templating"]["list"] if "definition" in v]
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def check(exprs: list[str]) -> list[str]:
    """Problems with ``exprs``: unknown metrics, labels a metric does not carry."""
    series = exported_series()
    problems = []
    for expr in exprs:
        metrics, grouping = parse(expr)
        if not metrics:
            problems.append(f"no metric in {expr!r}")
        available = set(TARGET_LABELS)
        for name, labels in metrics.items():
            if name in EXTERNAL:
                available |= labels
                continue
            if name not in series:
                problems.append(f"{name} is not exported by service.metrics")
                continue
            available |= series[name]
            if unknown := labels - series[name] - TARGET_LABELS:
                problems.append(f"{name} has no label {sorted(unknown)} ({expr!r})")
        if unknown := grouping - available:
            problems.append(f"grouping by {sorted(unknown)}, which no series has ({expr!r})")
    return problems


def test_template_variables_read_exported_labels() -> None:
    series = exported_series()
    queries = [e for e in dashboard_expressions() if e.startswith("label_values")]
    assert queries
    for query in queries:
        match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
        assert match, query
        metric, label = match.groups()
        assert metric in series and label in series[metric] | TARGET_LABELS


def test_the_dashboard_uses_only_exported_metrics() -> None:
    exprs = [e for e in dashboard_expressions() if not e.startswith("label_values")]
    assert len(exprs) >= 25
    assert check(exprs) == []
    used = set().union(*(parse(e)[0].keys() for e in exprs))
    # The panels the issue names: per-stage latency, throughput, fallbacks, bundle, swaps, failures.
    assert {
        "nsp_recall_stage_duration_seconds_bucket",
        "nsp_request_duration_seconds_bucket",
        "nsp_request_duration_seconds_count",
        "nsp_recall_fallbacks_total",
        "nsp_recall_degraded_total",
        "nsp_bundle_version",
        "nsp_bundle_swaps_total",
        "nsp_bundle_load_failures_total",
        "nsp_nearline_cache_hits_total",
    } <= used


def test_alert_expressions_use_only_exported_metrics() -> None:
    assert check([rule["expr"] for rule in alert_rules()]) == []


@pytest.mark.parametrize(
    "expr",
    [
        "rate(nsp_recall_fallback_total[5m])",  # a misspelt name
        "nsp_bundle_swaps",  # a counter without _total
        "sum by (stage) (rate(nsp_request_duration_seconds_count[5m]))",  # a label it lacks
        'rate(nsp_recall_fallbacks_total{reasons="no_history"}[5m])',
        "count by (job, nsp_bundle_version) (nsp_bundle_version)",  # a value is not a label
    ],
)
def test_the_check_reports_wrong_metrics_and_labels(expr: str) -> None:
    assert check([expr]) != []


def test_alert_rules_have_the_structure_prometheus_loads() -> None:
    loaded = yaml.safe_load(ALERTS.read_text())
    assert set(loaded) == {"groups"}
    group_names = [group["name"] for group in loaded["groups"]]
    assert len(group_names) == len(set(group_names))
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)) and all(re.fullmatch(r"[A-Z][A-Za-z0-9]+", n) for n in names)
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES
        assert {"summary", "description"} <= set(rule["annotations"])
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"])
        assert rule["expr"].count("(") == rule["expr"].count(")")
    # The failures the issue names, each covered by some rule.
    covered = " ".join(rule["expr"] for rule in rules)
    for needle in (
        "kube_deployment_status_replicas_available",  # no ready pods
        'route="/v1/recall"',  # p99
        'outcome="5xx"',
        "nsp_recall_fallbacks_total",
        "nsp_bundle_load_failures_total",
        "nsp_bundle_loaded_timestamp_seconds",  # stale bundle
    ):
        assert needle in covered, needle

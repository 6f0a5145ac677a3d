"""/metrics from a seeded store, and the Grafana dashboard built on its names."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from services.api.main import create_app
from tests.dashboards.conftest import seed_fleet_store

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards" / "grafana"
# PromQL words that are not metric names: functions, aggregations, keywords.
PROMQL_WORDS = {
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "by",
    "without",
    "rate",
    "increase",
    "irate",
    "clamp_min",
    "clamp_max",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "topk",
    "bottomk",
    "delta",
    "deriv",
    "histogram_quantile",
    "abs",
    "last_over_time",
    "max_over_time",
    "avg_over_time",
    "vector",
    "scalar",
    "time",
}


@pytest.fixture
def samples(settings, tmp_path) -> dict[str, list]:
    seed_fleet_store(settings, tmp_path)
    answer = TestClient(create_app()).get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def _value(samples, name, **labels) -> float:
    [match] = [s for s in samples[name] if all(s.labels.get(k) == v for k, v in labels.items())]
    return match.value


def test_metrics_count_what_the_store_holds(samples):
    assert _value(samples, "flywheel_episodes_ingested_total", kind="deployment") == 8
    assert _value(samples, "flywheel_episodes_quarantined_total") == 1  # the truncated upload
    assert _value(samples, "flywheel_training_seconds_total") == 42.0
    # the newest evaluation is candidate 4's: 5 of 40 against the champion's 12 of 40
    assert _value(samples, "flywheel_evaluation_success_ratio", side="candidate") == 5 / 40
    assert _value(samples, "flywheel_evaluation_success_ratio", side="champion") == 12 / 40
    assert _value(samples, "flywheel_champion_info", version="2") == 1
    assert _value(samples, "flywheel_rollout_stage", stage="canary", to_version="5") == 1
    assert _value(samples, "flywheel_rollout_share") == 0.25
    # night 2: one takeover in 4 episodes of 5 minutes
    assert _value(samples, "flywheel_interventions_per_robot_hour") == pytest.approx(3.0)
    assert _value(samples, "flywheel_robot_interventions_total", policy_version="5") == 1


def test_an_empty_store_reports_zeros_not_errors(settings):
    text = TestClient(create_app()).get("/metrics").text
    lines = text.splitlines()
    assert "flywheel_rollout_share 0.0" in lines
    assert "flywheel_training_seconds_total 0.0" in lines
    # no night yet: the figure is declared, with no sample
    assert not [x for x in lines if x.startswith("flywheel_interventions_per_robot_hour")]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r"\$\w+", "", expr)  # Grafana variables
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        rest = expr[match.end() :].lstrip()
        if match.group() not in PROMQL_WORDS and not rest.startswith("("):
            names.add(match.group())
    return names


def test_metric_names_are_read_from_promql():
    expr = 'sum by (policy_version) (increase(a_total{x="y"}[5m])) / (b_total / 3600) + c'
    assert metric_names(expr) == {"a_total", "b_total", "c"}


@pytest.mark.parametrize("path", sorted(DASHBOARDS.glob("*.json")), ids=lambda p: p.name)
def test_every_grafana_panel_queries_metrics_the_service_exports(path, samples):
    dashboard = json.loads(path.read_text())
    assert dashboard["title"] and dashboard["uid"] and dashboard["schemaVersion"] >= 36
    panels = dashboard["panels"]
    assert panels and len({p["id"] for p in panels}) == len(panels)
    used = set()
    for panel in panels:
        assert panel["type"] in {"timeseries", "stat", "gauge", "table", "bargauge"}
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, (panel["title"], target["expr"])
            unknown = names - set(samples)
            assert not unknown, f"{panel['title']!r} queries {unknown}, which /metrics lacks"
            used |= names
    assert {
        "flywheel_episodes_ingested_total",
        "flywheel_episodes_quarantined_total",
        "flywheel_training_seconds_total",
        "flywheel_evaluation_success_ratio",
        "flywheel_rollout_stage",
        "flywheel_interventions_per_robot_hour",
    } <= used

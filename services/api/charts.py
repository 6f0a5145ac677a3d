"""The review pages' plots, as Plotly figures serialised to JSON for plotly.js in the page.

Each function takes what a read function in ``services/`` returned and draws it; none of
them queries anything.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from markupsafe import Markup
from plotly.subplots import make_subplots

CANDIDATE = "#1f77b4"
CHAMPION = "#7f7f7f"
OPERATOR = "rgba(255, 127, 14, 0.25)"
_LAYOUT = dict(
    template="plotly_white",
    height=320,
    margin=dict(l=60, r=20, t=50, b=40),
    legend=dict(orientation="h", y=-0.2),
)


def to_json(figure: go.Figure) -> Markup:
    """The figure as JSON that is safe inside a <script type="application/json"> element."""
    return Markup(figure.to_json().replace("</", "<\\/"))


def _pct(rate: float | None) -> float | None:
    return None if rate is None else 100 * rate


def _ci_bars(rows: list[dict], rate: str = "rate", ci: str = "ci") -> dict[str, Any]:
    """Asymmetric error bars (percent) from Wilson intervals."""
    return dict(
        type="data",
        symmetric=False,
        array=[100 * (r[ci][1] - r[rate]) if r.get(ci) else None for r in rows],
        arrayminus=[100 * (r[rate] - r[ci][0]) if r.get(ci) else None for r in rows],
    )


def fleet_success(nights: list[dict]) -> go.Figure:
    """The fleet's success in deployment, night by night."""
    shown = [n for n in nights if n["fleet"].get("episodes")]
    x = [n["night"] for n in shown]
    figure = go.Figure()
    for key, name in (("autonomous_success", "completed alone"), ("success", "completed")):
        figure.add_scatter(
            x=x, y=[_pct(n["fleet"].get(key)) for n in shown], mode="lines+markers", name=name
        )
    figure.update_layout(
        title="Fleet success per night (%)", xaxis=dict(title="night", dtick=1), **_LAYOUT
    )
    figure.update_yaxes(range=[0, 100])
    return figure


def fleet_interventions(nights: list[dict]) -> go.Figure:
    shown = [n for n in nights if n["fleet"].get("interventions_per_robot_hour") is not None]
    figure = go.Figure(
        go.Scatter(
            x=[n["night"] for n in shown],
            y=[n["fleet"]["interventions_per_robot_hour"] for n in shown],
            mode="lines+markers",
            name="interventions per robot-hour",
            line=dict(color="#d62728"),
        )
    )
    figure.update_layout(
        title="Interventions per robot-hour",
        xaxis=dict(title="night", dtick=1),
        **_LAYOUT,
        showlegend=False,
    )
    figure.update_yaxes(rangemode="tozero")
    return figure


def learning_curve(points: list[dict], *, highlight: str | None = None) -> go.Figure:
    """Closed-loop success of each night's candidate against its champion, with 95% CIs."""
    labels = [
        f"night {p['night']}: v{p['model_version']}" if p["night"] else f"v{p['model_version']}"
        for p in points
    ]
    figure = go.Figure()
    figure.add_scatter(
        x=labels,
        y=[_pct(p["rate"]) for p in points],
        error_y=_ci_bars(points),
        mode="lines+markers",
        name="candidate",
        line=dict(color=CANDIDATE),
        marker=dict(
            size=[14 if p["model_version"] == highlight else 8 for p in points],
        ),
    )
    champions = [p for p in points if p["champion_rate"] is not None]
    figure.add_scatter(
        x=[labels[points.index(p)] for p in champions],
        y=[_pct(p["champion_rate"]) for p in champions],
        error_y=_ci_bars(champions, "champion_rate", "champion_ci"),
        mode="markers",
        name="champion (same seeds)",
        marker=dict(color=CHAMPION, symbol="diamond"),
    )
    figure.update_layout(title="Learning curve: closed-loop success (%)", **_LAYOUT)
    figure.update_yaxes(range=[0, 100])
    return figure


def champion_timeline(history: list[dict]) -> go.Figure:
    """Which version was champion when: promotions and rollbacks."""
    figure = go.Figure(
        go.Scatter(
            x=[h["at"] for h in history],
            y=[f"v{h['to_version']}" for h in history],
            mode="lines+markers",
            line=dict(shape="hv", color=CANDIDATE),
            marker=dict(
                size=10,
                symbol=["x" if h["kind"] == "rollback" else "circle" for h in history],
            ),
            text=[f"{h['kind']} by {h['actor']}: {h['reason'] or ''}" for h in history],
            name="champion",
        )
    )
    figure.update_layout(title="Champion history", **_LAYOUT, showlegend=False)
    figure.update_yaxes(
        type="category",
        categoryorder="array",
        categoryarray=sorted({f"v{h['to_version']}" for h in history}, key=lambda v: (len(v), v)),
    )
    return figure


def task_success(tasks: list[dict]) -> go.Figure:
    """Per task: candidate against champion on the same seeds, with 95% Wilson intervals."""
    figure = go.Figure()
    for side, color in (("candidate", CANDIDATE), ("champion", CHAMPION)):
        rows = [t[side] for t in tasks if t[side]]
        figure.add_bar(
            x=[t["task"] for t in tasks if t[side]],
            y=[_pct(r["rate"]) for r in rows],
            error_y=_ci_bars(rows),
            name=side,
            marker_color=color,
            text=[f"{r['successes']}/{r['n']}" for r in rows],
        )
    figure.update_layout(title="Success per task (%), 95% CI", barmode="group", **_LAYOUT)
    figure.update_yaxes(range=[0, 100])
    return figure


def trajectory(
    states: list[list[float]],
    actions: list[list[float]],
    *,
    title: str,
    operator_spans: list[tuple[int, int]] = (),
) -> go.Figure:
    """State and action over the steps of one episode; the operator's spans shaded."""
    figure = make_subplots(
        rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, subplot_titles=("state", "action")
    )
    for row, values, name in ((1, states, "state"), (2, actions, "action")):
        for dim in range(len(values[0]) if values else 0):
            figure.add_scatter(
                y=[v[dim] for v in values],
                mode="lines",
                name=f"{name}[{dim}]",
                row=row,
                col=1,
                showlegend=False,
                line=dict(width=1.5),
            )
    for i, (start, end) in enumerate(operator_spans):
        # half a step either side, so a one-step takeover is visible
        figure.add_vrect(
            x0=start - 0.5,
            x1=end - 0.5,
            fillcolor=OPERATOR,
            line_width=0,
            layer="below",
            annotation_text="operator" if i == 0 else None,
            annotation_position="top left",
        )
    figure.update_layout(title=title, **{**_LAYOUT, "height": 360})
    figure.update_xaxes(title_text="step", row=2, col=1)
    return figure


def rollout_watch(rollout: dict, thresholds: dict[str, float]) -> go.Figure:
    """Every window of a rollout: the candidate's robots against the champion's, and each
    watched metric's cumulative log-likelihood ratio against its rollback threshold."""
    windows = [(s["name"], w) for s in rollout["stages"] for w in s["windows"]]
    x = [f"{i + 1}. {name}" for i, (name, _) in enumerate(windows)]
    figure = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.12,
        subplot_titles=("interventions per robot-hour", "log-likelihood ratio (worse vs as good)"),
    )
    for side, name, color in (
        ("treatment", f"v{rollout['to_version']}", CANDIDATE),
        ("control", f"v{rollout['from_version']} (champion)", CHAMPION),
    ):
        figure.add_scatter(
            x=x,
            y=[_per_hour(w[side]) for _, w in windows],
            mode="lines+markers",
            name=name,
            line=dict(color=color),
            row=1,
            col=1,
        )
    for metric in thresholds:
        figure.add_scatter(
            x=x,
            y=[w["llr"].get(metric) for _, w in windows],
            mode="lines+markers",
            name=f"LLR {metric}",
            row=2,
            col=1,
        )
    for threshold in sorted(set(thresholds.values())):
        names = " and ".join(m for m, t in thresholds.items() if t == threshold)
        figure.add_hline(
            y=threshold,
            line_dash="dash",
            row=2,
            col=1,
            annotation_text=f"rolls back: {names}",
            annotation_position="top left",
        )
    figure.update_layout(
        title=f"Rollout {rollout['id']}: watched metrics", **{**_LAYOUT, "height": 440}
    )
    return figure


def _per_hour(counts: dict) -> float | None:
    return counts["interventions"] / counts["hours"] if counts.get("hours") else None

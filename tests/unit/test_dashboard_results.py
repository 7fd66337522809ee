"""What the dashboard says about results that the intake states on the status: every
interval with its true level (after ``alpha`` and the correction for several variants,
never a fixed "95%"), and when counts restarted on a new server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from smart_dashboard.app import templates
from smart_dashboard.present import Estimate, level_text, summarize
from smart_operator.models.experiment import Experiment, ExperimentStatus
from smart_operator.stats import StoppingRules, VariantCounts, analyze, to_status

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def experiment(
    counts: list[tuple[str, int, int]], alpha: float, status: dict[str, Any] | None = None
) -> Experiment:
    """An Experiment whose status is what the intake writes for ``counts``."""
    if status is None:
        analysis = analyze(
            [VariantCounts(n, v, c) for n, v, c in counts],
            StoppingRules(alpha=alpha),
            START,
            START + timedelta(days=7),
        )
        variants, statistics, decision = to_status(analysis, START + timedelta(days=7))
        status = ExperimentStatus(
            variants=variants, statistics=statistics, decision=decision
        ).model_dump(by_alias=True, mode="json", exclude_none=True)
    return Experiment.model_validate(
        {
            "kind": "Experiment",
            "metadata": {"name": "headline", "namespace": "customer-acme"},
            "spec": {
                "domainRef": "shop",
                "type": "landing_page",
                "template": "saas_landing",
                "variants": [{"name": n} for n, _, _ in counts],
                "stopping": {"alpha": alpha},
            },
            "status": status,
        }
    )


def shown(estimate: Estimate) -> str:
    """The estimate as the pages render it (the ``estimate`` macro)."""
    template = templates().from_string('{% from "macros.html" import estimate %}{{ estimate(e) }}')
    return template.render(e=estimate)


@pytest.mark.parametrize(
    ("alpha", "uplift_level"),
    [
        # Three variants against control at alpha 0.05: Holm tests the best at 0.05/3.
        (0.05, "98.3%"),
        # alpha 0.01: the best at 0.01/3 (99.667%, cut rather than rounded up).
        (0.01, "99.66%"),
    ],
)
def test_the_uplift_interval_is_labelled_with_its_corrected_level(
    alpha: float, uplift_level: str
) -> None:
    counts = [("a", 5000, 250), ("b", 5000, 270), ("c", 5000, 380), ("d", 5000, 255)]
    summary = summarize(experiment(counts, alpha))
    best = summary.rows[2]
    assert best.uplift.level == uplift_level
    assert f"{uplift_level} interval " in shown(best.uplift)
    assert "95% interval" not in shown(best.uplift)
    # The rates' Wilson intervals are look-once 95% intervals, and say so.
    assert best.rate.level == "95%" and "95% interval " in shown(best.rate)
    # The experiments list shows the best improvement with the same label.
    assert summary.best is not None and summary.best.level == uplift_level


def test_a_status_without_levels_shows_no_level_rather_than_a_wrong_one() -> None:
    """A status written before the intake stated levels: the interval is shown without
    a level; the dashboard's own Wilson interval (no interval on the status) is 95%."""
    counts = [("a", 5000, 250), ("b", 5000, 330)]
    old = {
        "variants": [
            {"name": "a", "visitors": 5000, "conversions": 250},
            {
                "name": "b",
                "visitors": 5000,
                "conversions": 330,
                "rateLow": 0.059,
                "rateHigh": 0.073,
                "uplift": 0.32,
                "upliftLow": 0.05,
                "upliftHigh": 0.65,
            },
        ],
        "statistics": {"visitorsNeeded": 0},
    }
    rows = summarize(experiment(counts, 0.05, status=old)).rows
    assert rows[1].uplift.level is None and rows[1].rate.level is None
    text = shown(rows[1].uplift)
    assert "interval +5.0% to +65.0%" in text and "%  interval" not in text
    assert "95%" not in text
    assert rows[0].rate.level == "95%"  # computed by the dashboard itself


def test_levels_read_exactly() -> None:
    assert [level_text(c) for c in (0.95, 0.975, 1 - 0.05 / 3, 0.9999, 0.9, 1 - 0.01 / 3)] == [
        "95%",
        "97.5%",
        "98.3%",
        "99.99%",
        "90%",
        "99.66%",
    ]


def page(summary: Any, now: datetime) -> str:
    """The experiment page as the dashboard renders it (``views.render``'s context)."""
    return (
        templates()
        .get_template("experiment.html")
        .render(
            s=summary,
            now=now,
            domain=None,
            chart="",
            session=None,
            path="/experiments/headline",
            title="headline",
            error=None,
            notice=None,
        )
    )


def test_the_experiment_page_says_when_counts_restarted_on_a_new_server() -> None:
    counts = [("a", 5000, 250), ("b", 5000, 330)]
    now = START + timedelta(days=7)
    plain = summarize(experiment(counts, 0.05))
    assert plain.counts_restarted_at is None
    assert "Counts restarted" not in page(plain, now)
    status = experiment(counts, 0.05).status
    assert status is not None
    restarted = status.model_dump(by_alias=True, mode="json", exclude_none=True)
    restarted["countsRestartedAt"] = (now - timedelta(hours=3)).isoformat()
    summary = summarize(experiment(counts, 0.05, status=restarted))
    text = page(summary, now)
    assert "Counts restarted 3 h ago" in text
    assert "The counts from before are kept, and the new server's are added to them." in text

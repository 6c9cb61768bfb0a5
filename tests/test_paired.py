"""The paired promotion gate (`tracking/paired.py`) on hand-made per-example results whose answer is
worked out by hand, and through the registry on a real SQLite store.

Hand-made test set: 100 examples, the champion wrong on the first 30. A challenger that differs from
it only on some of those examples has an accuracy advantage of (examples fixed) / 100, and a
bootstrap resample draws the fixed examples Binomial(100, k/100) times in all, so:
- one fixed (k = 1): a resample misses it with probability 0.99^100 = 0.366 > 5%, so the 5% lower
  bound of the advantage is exactly 0: not promoted at 95%, though its score is higher;
- twenty fixed (k = 20): Binomial(100, 0.2) has its 5% quantile at 14 (P(X <= 13) = 0.047), 2.5% at
  12 and 97.5% at 28 (scipy.stats.binom.ppf), so the lower bound is about 0.14 and the 95% interval
  about [0.12, 0.28]: promoted at margin 0, not at margin 0.15.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from test_registry import _checkpoint
from tunefleet.tracking import registry
from tunefleet.tracking.paired import NotComparable, compare

GOLD = [i % 2 for i in range(100)]


def _record(wrong: set[int], fingerprint: str = "test-set-a", task: str = "text-classification") -> dict:
    predicted = [1 - g if i in wrong else g for i, g in enumerate(GOLD)]
    return {"format": 1, "task": task, "label_names": ["negative", "positive"], "fingerprint": fingerprint,
            "examples": len(GOLD), "gold": GOLD, "predicted": predicted}


CHAMPION = _record(set(range(30)))  # accuracy 0.70
ONE_BETTER = _record(set(range(1, 30)))  # 0.71: example 0 fixed
TWENTY_BETTER = _record(set(range(20, 30)))  # 0.90


def test_one_better_example_in_100_is_seed_noise_not_an_improvement():
    result = compare(CHAMPION, ONE_BETTER, "accuracy", "max", confidence=0.95)
    assert result.advantage == pytest.approx(0.01)
    assert result.examples == 100 and result.samples == 2000
    assert result.lower_bound == 0.0  # over a third of the resamples leave example 0 out
    assert result.interval[0] == 0.0 and 0.02 <= result.interval[1] <= 0.04


def test_twenty_better_examples_give_the_hand_worked_binomial_bounds():
    result = compare(CHAMPION, TWENTY_BETTER, "accuracy", "max", confidence=0.95)
    assert result.advantage == pytest.approx(0.20)
    assert 0.125 <= result.lower_bound <= 0.15
    assert result.interval[0] == pytest.approx(0.12, abs=0.015)
    assert result.interval[1] == pytest.approx(0.28, abs=0.015)
    # The other way round the advantage is negative by the same amounts.
    reverse = compare(TWENTY_BETTER, CHAMPION, "accuracy", "max", confidence=0.95)
    assert reverse.advantage == pytest.approx(-0.20) and reverse.interval[1] == pytest.approx(-0.12, abs=0.015)


def test_measured_seed_noise_widens_the_interval_by_the_hand_worked_amount():
    """Twenty better examples in 100 (test-set sd of the difference ~0.04) plus a seed noise of sd
    0.1: total sd sqrt(0.04^2 + 0.1^2) = 0.108, lower bound about 0.20 - 1.645 x 0.108 = 0.02 > 0,
    promoted; with seed noise 0.15, sd 0.155 and lower bound about -0.055: not."""
    from tunefleet.tracking.paired import seed_noise_of_difference

    some = compare(CHAMPION, TWENTY_BETTER, "accuracy", "max", confidence=0.95, seed_noise=0.1)
    assert some.advantage == pytest.approx(0.20) and some.seed_noise == 0.1
    assert 0.0 < some.lower_bound < 0.06
    more = compare(CHAMPION, TWENTY_BETTER, "accuracy", "max", confidence=0.95, seed_noise=0.15)
    assert -0.10 < more.lower_bound < -0.01
    # Two seeds' difference: sqrt(0.03^2 + 0.04^2) = 0.05; one known spread stands for both.
    assert seed_noise_of_difference(0.03, 0.04) == pytest.approx(0.05)
    assert seed_noise_of_difference(0.1, None) == pytest.approx(0.1414, abs=1e-4)
    assert seed_noise_of_difference(None, None) is None


def test_a_metric_where_lower_is_better_counts_a_lower_value_as_the_advantage():
    # Regression, mse: the champion is off by 1 on every example, the challenger by 0 on half of them.
    gold = [float(i % 5) for i in range(40)]
    base = {"format": 1, "task": "text-regression", "label_names": ["score"], "fingerprint": "f", "examples": 40, "gold": gold}
    champion = base | {"predicted": [g + 1.0 for g in gold]}  # mse 1.0
    challenger = base | {"predicted": [g + (1.0 if i % 2 else 0.0) for i, g in enumerate(gold)]}  # mse 0.5
    result = compare(champion, challenger, "mse", "min", confidence=0.95)
    assert result.advantage == pytest.approx(0.5)
    assert 0.3 < result.lower_bound < 0.5  # 20 of 40 improved by 1: 0.5 - 1.645 x sqrt(.25/40) = 0.37


def test_results_on_different_examples_or_tasks_are_not_paired():
    with pytest.raises(NotComparable, match="different test examples"):
        compare(CHAMPION, _record(set(), fingerprint="test-set-b"), "accuracy", "max", 0.95)
    with pytest.raises(NotComparable, match="different tasks"):
        compare(CHAMPION, _record(set(), task="text-pair-classification"), "accuracy", "max", 0.95)
    with pytest.raises(NotComparable, match="not a per-example metric"):
        compare(CHAMPION, ONE_BETTER, "loss", "min", 0.95)


def test_the_registry_promotes_real_improvements_only_and_records_why(tiny_model, tmp_path):
    """Through `register_checkpoint` and `promote` on SQLite: the decision, interval and number of
    test examples land on the version and in `tunefleet models`; the old fixed-margin comparison
    would have promoted the one-example challenger (0.71 > 0.70)."""
    from tunefleet.cli import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    checkpoint = _checkpoint(tiny_model, tmp_path / "cls", "text-classification")
    name = f"paired-{os.getpid()}-{time.monotonic_ns() % 10**9}"

    def register(accuracy: float, record: dict | None, **kwargs) -> dict:
        return registry.register_checkpoint(checkpoint, name, {"accuracy": accuracy}, tracking_uri=uri,
                                            test_predictions=record, **kwargs)

    assert register(0.70, CHAMPION)["promoted"]["promoted"]  # v1: the first is champion
    noise = register(0.71, ONE_BETTER)  # v2
    assert noise["promoted"]["promoted"] is False and noise["aliases"] == ["challenger"]
    assert noise["promoted"]["paired"]["lower_bound"] == 0.0
    assert "over 100 paired test examples" in noise["promoted"]["reason"]
    # The margin gate, asked for explicitly, compares the scores: 0.71 beats 0.70.
    assert register(0.71, ONE_BETTER, gate="margin")["promoted"]["promoted"]  # v3
    assert registry.rollback(name, tracking_uri=uri)["champion"] == 1
    # `tunefleet promote` without --force judges the same way; --force overrides.
    assert registry.promote(name, 2, tracking_uri=uri)["promoted"]["promoted"] is False
    real = register(0.90, TWENTY_BETTER)  # v4
    assert real["promoted"]["promoted"] and real["aliases"] == ["champion"]
    # Results on other test examples cannot be paired: the scores decide, and the reason says so.
    other = register(0.95, _record(set(range(5)), fingerprint="test-set-b"))  # v5
    assert other["promoted"]["promoted"]
    assert "not paired: different test examples" in other["promoted"]["reason"]
    unrecorded = register(0.96, None)  # v6: registered without per-example results
    assert "not paired: this version has no per-example test results" in unrecorded["promoted"]["reason"]
    # A champion whose seed spread was measured (sd 0.1): a challenger twenty examples better is
    # within two seeds' noise (sd sqrt(2) x 0.1 = 0.14, lower bound about -0.04), so it stays challenger.
    name_before, name = name, name + "-seeds"
    assert register(0.70, CHAMPION, seed_std=0.1)["promoted"]["promoted"]
    noisy = register(0.90, TWENTY_BETTER)
    assert noisy["promoted"]["promoted"] is False and "seed noise (sd 0.1414)" in noisy["promoted"]["reason"]
    assert noisy["promoted"]["paired"]["seed_noise"] == pytest.approx(0.1414, abs=1e-4)
    # Forced to champion, the twenty-better version (no spread of its own) meets one right on every
    # example (ten more, advantage 0.10): the model's measured spread still counts, so the lower
    # bound is about 0.10 - 1.645 x 0.145 < 0 and it is not promoted, where the test set alone
    # (sd about 0.03) would have promoted it.
    assert registry.promote(name, noisy["version"], force=True, tracking_uri=uri)["promoted"]["promoted"]
    perfect = register(1.0, _record(set()))
    assert perfect["promoted"]["promoted"] is False and "seed noise (sd 0.1414)" in perfect["promoted"]["reason"]
    assert compare(TWENTY_BETTER, _record(set()), "accuracy", "max", 0.95).lower_bound > 0.04
    name = name_before

    rows = {row["version"]: row for row in main_json(main, ["models", name, "--tracking-uri", uri])["models"]}
    assert rows[2]["decision"] == "kept challenger" and rows[2]["gate"] == "paired bootstrap"
    assert rows[2]["test_examples"] == 100 and rows[2]["interval"][0] == 0.0 and rows[2]["advantage"] == pytest.approx(0.01)
    assert rows[4]["decision"] == "promoted" and 0.125 <= rows[4]["interval"][0] <= rows[4]["interval"][1] <= 0.3
    assert rows[5]["gate"] == "margin" and rows[1]["gate"] == "first"
    assert registry.promote(name, 2, force=True, tracking_uri=uri)["promoted"]["promoted"]


def main_json(main, argv: list[str]) -> dict:
    """Run the CLI and read the JSON summary it prints as its last line."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return json.loads(out.getvalue().strip().splitlines()[-1])

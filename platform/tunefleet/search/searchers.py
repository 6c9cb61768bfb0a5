"""Search algorithms: one builder per name in `tunefleet.plugins.SEARCHERS`.

A builder takes the validated spec, the points to try first and the most trials to run at once, and
returns what `ray.tune.TuneConfig(search_alg=...)` accepts: a `ray.tune.search.Searcher` (Tune wraps it
in a `ConcurrencyLimiter` when the sweep passes `max_concurrent_trials`) or a `SearchAlgorithm` that
limits itself. Metric and mode reach it later through `TuneConfig`, so a builder never names them.
Ray and Optuna are imported inside the builder: naming a searcher in a spec costs nothing.

Adding a search algorithm is a builder here and a line in `plugins.SEARCHERS`;
`tests/contracts/test_searchers.py` then runs it like every other.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Protocol, Sequence

from ..spec import Spec
from .space import start_up_design
from .warm_start import EarlierTrial


class SearcherBuilder(Protocol):
    def __call__(self, spec: Spec, points: list[dict[str, Any]], max_concurrent: int,
                 earlier: Sequence[EarlierTrial] = ()) -> Any:
        """The search algorithm for `spec.search`.

        Args:
            points: hyperparameters (dotted spec path -> value) to evaluate first, in order.
            max_concurrent: most trials at once (0: no limit).
            earlier: trials of earlier sweeps, already evaluated (`warm_start.py`); gathered only
                for a builder with `takes_earlier_trials = True`, the others are never given any.
        """


def optuna_tpe(spec: Spec, points: list[dict[str, Any]], max_concurrent: int,
               earlier: Sequence[EarlierTrial] = ()) -> Any:
    """Optuna's TPE, seeded by `search.seed`; a `Searcher`, so Tune limits its concurrency. Earlier
    sweeps' trials enter its study as finished trials before its first proposal."""
    import optuna

    from .optuna_warm import WarmStartedOptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # TPE samples at random until it has n_startup_trials results; Optuna's default of 10 would
    # leave a 16-trial sweep mostly random. A quarter of the budget (3 to 10) lets TPE steer.
    # Earlier trials count towards them: a warm-started sweep models from its first trial.
    startup = min(10, max(3, spec.search.num_trials // 4))
    # The start-up trials not taken by a seeded point or earlier sweeps' trials come from a Latin
    # hypercube (`search.start_up_design`), tried first, so that they cover the space. No more than
    # the sweep runs: a point left over would wait in the study, and an extension would start there.
    if spec.search.start_up_design == "latin_hypercube":
        design = min(startup, spec.search.num_trials) - len(points) - len(earlier)
        points = points + start_up_design(spec.search.space, design, spec.search.seed)
    options: dict[str, Any] = {}
    if earlier:
        # TPE models its "good" trials against the rest. Optuna's default good group is the best
        # tenth: of 8 earlier trials, only the best, while its runners-up from the same region count
        # as bad, and the first proposals then steer away from where the earlier sweep did best.
        # The best quarter (hyperopt's split) keeps them together. On the trials of two real first
        # sweeps (benchmarks/warm_start.py, 60 sampler seeds each), the first proposal's learning
        # rate fell within 1.6x of the earlier best in 6 and 8 of 60 with the tenth, 53 and 45 with
        # the quarter. A cold sweep keeps Optuna's default: its first trials are for exploring.
        options["gamma"] = best_quarter
    with warnings.catch_warnings():
        # `gamma` is deprecated since Optuna 4.9 (to go in 6.0, hence optuna<6 in pyproject.toml).
        warnings.simplefilter("ignore", FutureWarning)
        sampler = optuna.samplers.TPESampler(seed=spec.search.seed, n_startup_trials=startup, **options)

    return WarmStartedOptunaSearch(sampler=sampler, points_to_evaluate=points or None, earlier=earlier)


def best_quarter(finished: int) -> int:
    """How many of `finished` trials TPE treats as good when warm-started: the best quarter, at most
    25 (a function at module level: Tune pickles the searcher with its sampler)."""
    return min(math.ceil(0.25 * finished), 25)


# A builder that models results declares it: only such a searcher is handed earlier sweeps' trials
# (`search.warm_start`); the others sample regardless of what was measured.
optuna_tpe.takes_earlier_trials = True  # type: ignore[attr-defined]


def random_search(spec: Spec, points: list[dict[str, Any]], max_concurrent: int,
                  earlier: Sequence[EarlierTrial] = ()) -> Any:
    """Tune's random sampling, seeded by `search.seed`."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Not a `Searcher`: Tune ignores `max_concurrent_trials` for it, so it must limit itself.
    return BasicVariantGenerator(random_state=spec.search.seed, points_to_evaluate=points or None,
                                 max_concurrent=max_concurrent)


def grid_search(spec: Spec, points: list[dict[str, Any]], max_concurrent: int,
                earlier: Sequence[EarlierTrial] = ()) -> Any:
    """Every combination of the space's grid and choice values, each once."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # `points` is ignored: the grid tries every value anyway, and a seeded point would run twice.
    return BasicVariantGenerator(random_state=spec.search.seed, max_concurrent=max_concurrent)

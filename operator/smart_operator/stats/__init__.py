"""Statistics of growth experiments: pure functions over counts, no I/O.

The results intake calls ``analyze`` after every report, continuing from what the
status holds (``recorded``), and writes the result onto the ``Experiment`` status with
``to_status``. Modules, each with one job:

- ``proportions``: rates and look-once intervals and tests (Wilson, Clopper-Pearson,
  two-proportion z-test, Newcombe, delta-method and Katz uplift);
- ``bayes``: chance to beat control and expected loss (exact Beta-Binomial sums, and
  fixed-size numerical integration above ``EXACT_TERMS``, so the cost never grows with
  the counts);
- ``sequential``: always-valid p-values and confidence sequences (mSPRT);
- ``srm``: the sample-ratio-mismatch check;
- ``multiple``: Holm and Benjamini-Hochberg across variants;
- ``latency``: p50/p95 with bootstrap intervals and always-valid intervals;
- ``decision``: the analysis and the decision rule;
- ``status``: the mapping onto the resource's status models, and back (``recorded``:
  what the next analysis continues from).

Every formula names its published source in its docstring. Nothing here imports
Kubernetes, kopf or any client; only numpy, scipy and the resource models (in
``status``).
"""

from smart_operator.stats.bayes import (
    chance_of_lift,
    chance_to_beat,
    expected_loss,
    probability_greater,
)
from smart_operator.stats.common import Estimate, Interval, Significance
from smart_operator.stats.decision import (
    Analysis,
    Metric,
    Outcome,
    Policy,
    Recorded,
    Rules,
    StoppingRules,
    VariantAnalysis,
    VariantCounts,
    Verdict,
    analyze,
)
from smart_operator.stats.latency import (
    LatencySummary,
    bootstrap_quantile_difference,
    bootstrap_quantile_interval,
    exact_bootstrap_distribution,
    quantile,
    quantile_confidence_sequence,
    summarize_latency,
)
from smart_operator.stats.multiple import Adjusted, adjust, benjamini_hochberg, holm
from smart_operator.stats.proportions import (
    clopper_pearson_interval,
    log_risk_ratio,
    log_risk_ratio_variance_under,
    newcombe_difference_interval,
    proportions_chi2_test,
    rate,
    relative_uplift_delta,
    relative_uplift_katz,
    restricted_rates,
    two_proportion_test,
    wilson_interval,
)
from smart_operator.stats.sequential import (
    SequentialComparison,
    always_valid_p_value,
    compare_conversions,
    confidence_sequence,
    confidence_sequence_half_width,
    log_mixture_likelihood_ratio,
)
from smart_operator.stats.srm import SRM_THRESHOLD, SampleRatioCheck, sample_ratio_check
from smart_operator.stats.status import recorded, to_status

__all__ = [
    "SRM_THRESHOLD",
    "Adjusted",
    "Analysis",
    "Estimate",
    "Interval",
    "LatencySummary",
    "Metric",
    "Outcome",
    "Policy",
    "Recorded",
    "Rules",
    "SampleRatioCheck",
    "SequentialComparison",
    "Significance",
    "StoppingRules",
    "VariantAnalysis",
    "VariantCounts",
    "Verdict",
    "adjust",
    "always_valid_p_value",
    "analyze",
    "benjamini_hochberg",
    "bootstrap_quantile_difference",
    "bootstrap_quantile_interval",
    "chance_of_lift",
    "chance_to_beat",
    "clopper_pearson_interval",
    "compare_conversions",
    "confidence_sequence",
    "confidence_sequence_half_width",
    "exact_bootstrap_distribution",
    "expected_loss",
    "holm",
    "log_mixture_likelihood_ratio",
    "log_risk_ratio",
    "log_risk_ratio_variance_under",
    "newcombe_difference_interval",
    "probability_greater",
    "proportions_chi2_test",
    "quantile",
    "quantile_confidence_sequence",
    "rate",
    "recorded",
    "relative_uplift_delta",
    "relative_uplift_katz",
    "restricted_rates",
    "sample_ratio_check",
    "summarize_latency",
    "to_status",
    "two_proportion_test",
    "wilson_interval",
]

"""Trained runs -> the paper's figures, claims with verdicts, and a report.

- :mod:`~bort_jax.report.registry`: :class:`Analysis` / :class:`Claim`, the
  single declaration of each figure or claim, and :func:`register`.
- :mod:`~bort_jax.report.analyses`: Section 4's analyses (Table 1, Fig. 3-6,
  Table 3, accuracy-vs-epoch curves), registered on import.
- :mod:`~bort_jax.report.stats`: paired t-intervals over training seeds
  (the unit of every verdict), within-run intervals (test images, Gram rows,
  0/1 outcomes), Holm's adjustment and the verdict rule.
- :mod:`~bort_jax.report.build`: runs the registry over trained runs.
- :mod:`~bort_jax.report.markdown`: ``report.md`` / ``report.json``.

Typical use::

  results = report.build(report.find_runs(workdir), out_dir, explain_config,
                         title="...", command="...")
  report.write_report(results, out_dir)
"""

from bort_jax.report import analyses  # noqa: F401  (registers Section 4)
from bort_jax.report.build import build
from bort_jax.report.markdown import (
    claims_table,
    demo_snippet,
    to_json,
    to_markdown,
    write_report,
)
from bort_jax.report.registry import (
    REGISTRY,
    Analysis,
    Claim,
    Context,
    Run,
    register,
    unregister,
)
from bort_jax.report.runs import (
    OPTIMIZER_LABELS,
    check_writable,
    find_runs,
    read_metrics,
)
from bort_jax.report.stats import VERDICT_RULE, VERDICTS, compare, judge, verdict

__all__ = [
    "OPTIMIZER_LABELS", "REGISTRY", "VERDICTS", "VERDICT_RULE", "Analysis",
    "Claim", "Context", "Run", "build", "check_writable", "claims_table",
    "compare", "demo_snippet", "find_runs", "judge", "read_metrics", "register",
    "to_json", "to_markdown", "unregister", "verdict", "write_report",
]

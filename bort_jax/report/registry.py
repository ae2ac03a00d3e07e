"""The report's figures and claims, each declared once as an :class:`Analysis`.

An analysis says what it measures on one trained run (``measure``), how the
measurements of one model's runs become the numbers of the report
(``summarize``), which paper claim those measurements decide (``claim``), and
how they are drawn (``plot``). :func:`register` adds one to :data:`REGISTRY`;
the report (sections, JSON, figures, claims) is built from the registry alone,
so a new figure is one ``register(Analysis(...))`` call plus its plot function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from bort_jax.report import stats


@dataclasses.dataclass(frozen=True)
class Run:
  """One trained run as an analysis sees it."""
  run_dir: str
  model: Any                # nnx conv model in eval mode
  config: Any               # its training config
  metrics: Sequence[Mapping]  # metrics.jsonl records
  measured: Mapping[str, Any]  # this run's measurements of earlier analyses
  errors: list = dataclasses.field(default_factory=list)
  """``(what, exception)`` of parts that failed while the rest went on."""


@dataclasses.dataclass(frozen=True)
class Context:
  """What every run of one model shares: images, explainer settings."""
  key: str                  # model key, e.g. "acnn_small_mnist_w0.125"
  label: str                # e.g. "ACNN-Small (width ×0.125)"
  images: Any               # (N, H, W, C) explained test images
  labels: np.ndarray        # (N,)
  layer: str                # the paper's layer of this model (Fig. 4-6, SAT)
  k: int                    # salient channels used (≤ explain.k)
  explain: Any              # the explain config
  test_split: Callable[[], Any]  # a fresh iterator over the whole test split
  _shared: dict = dataclasses.field(default_factory=dict, repr=False,
                                    compare=False)

  def shared(self, name: str, compute: Callable[[], Any]) -> Any:
    """``compute()``, run once per model: a value every run of it reuses
    (e.g. inputs read from the test split)."""
    if name not in self._shared:
      self._shared[name] = compute()
    return self._shared[name]

  @property
  def shown(self):
    return self.images[:self.explain.num_show]

  def threshold(self, analysis_id: str, better: str) -> float:
    """The signed threshold of a claim's difference (:func:`stats.threshold`)."""
    kind, value = claim_threshold(self.explain, analysis_id)
    return stats.threshold(better, **{kind: value})


Measured = Mapping[str, Sequence[Any]]
"""``{optimizer label: [one measurement per run (seed)]}``; baseline first."""


@dataclasses.dataclass(frozen=True)
class Claim:
  """A statement of the paper and the differences that decide it.

  ``differences(measured, ctx)`` returns :class:`stats.Difference` values (use
  :func:`stats.compare`, with the claim's threshold from
  :func:`claim_threshold`); the verdict follows :func:`stats.judge`. It may
  instead return a string saying why this model's measurements cannot decide
  the claim (e.g. no adversarial pair left to count): the claim then lists it
  under ``missing`` and cannot hold.

  ``statement`` may name the claim's threshold as ``{margin}`` or
  ``{min_effect}`` (the value fixed in the explain config's ``claims``);
  ``if_not_reproduced`` is added to the claim when it does not hold or is
  mixed.
  """
  statement: str
  differences: Callable[[Measured, Context], list[stats.Difference] | str]
  if_not_reproduced: str = ""


def claim_threshold(explain_config, analysis_id: str) -> tuple[str, float]:
  """``("margin" | "min_effect", value)`` of a claim, from the explain
  config's ``claims`` sub-config (``<id>_margin`` or ``<id>_min_effect``),
  where every threshold is fixed before any result is seen."""
  claims = explain_config.get("claims") if hasattr(explain_config, "get") \
      else None
  claims = dict(claims or {})
  found = [(kind, claims[f"{analysis_id}_{kind}"])
           for kind in ("margin", "min_effect")
           if f"{analysis_id}_{kind}" in claims]
  if len(found) != 1:
    raise ValueError(
        f"claim {analysis_id!r} needs exactly one of "
        f"explain.claims.{analysis_id}_margin and "
        f"explain.claims.{analysis_id}_min_effect (fixed before any result); "
        f"got {[k for k, _ in found] or 'neither'} (claims: {sorted(claims)})")
  kind, value = found[0]
  return kind, float(value)


@dataclasses.dataclass(frozen=True)
class Analysis:
  """One figure/table of the report (see the module docstring)."""
  id: str                   # e.g. "fig3b"; also the figure's file suffix
  title: str                # the report's section heading
  description: str          # what is measured, one paragraph
  measure: Callable[[Run, Context], Any]
  summarize: Callable[[Measured, Context], Mapping[str, Mapping[str, Any]]] | None = None
  plot: Callable[[Measured, Context], Any] | None = None  # -> matplotlib Figure
  claim: Claim | None = None
  needs: tuple[str, ...] = ()  # analyses whose measurements ``measure`` reads


REGISTRY: dict[str, Analysis] = {}


def register(analysis: Analysis, *, replace: bool = False) -> Analysis:
  """Adds ``analysis`` to the report (after those already registered)."""
  if not isinstance(analysis, Analysis):
    raise TypeError(f"register takes an Analysis; got {type(analysis).__name__}")
  if analysis.id in REGISTRY and not replace:
    raise ValueError(f"analysis id {analysis.id!r} is already registered "
                     f"(ids: {sorted(REGISTRY)}); pass replace=True to redefine")
  unknown = [n for n in analysis.needs if n not in REGISTRY]
  if unknown:
    raise ValueError(f"analysis {analysis.id!r} needs {unknown}, which are not "
                     f"registered before it (registered: {list(REGISTRY)})")
  REGISTRY[analysis.id] = analysis
  return analysis


def unregister(analysis_id: str) -> None:
  """Removes an analysis (tests register temporary ones)."""
  if analysis_id not in REGISTRY:
    raise KeyError(f"no analysis {analysis_id!r}; registered: {list(REGISTRY)}")
  dependents = [a.id for a in REGISTRY.values() if analysis_id in a.needs]
  if dependents:
    raise ValueError(f"{dependents} need {analysis_id!r}; remove them first")
  del REGISTRY[analysis_id]

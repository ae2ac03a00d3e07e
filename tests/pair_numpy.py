"""PAIR saliency's GuidedIG on numpy >= 2.4.

PAIR's ``GuidedIG`` calls ``np.quantile(..., interpolation=...)``; numpy 2.4
removed that keyword (its name since 1.22 is ``method``). Our GuidedIG is
native JAX and does not need PAIR; the test and the benchmark that compare it
with PAIR's run PAIR inside :func:`quantile_accepts_interpolation`.
"""

import contextlib

import numpy as np


@contextlib.contextmanager
def quantile_accepts_interpolation():
  """Within: ``np.quantile(interpolation=m)`` means ``np.quantile(method=m)``."""
  original = np.quantile

  def quantile(a, q, *args, interpolation=None, **kwargs):
    if interpolation is not None:
      kwargs["method"] = interpolation
    return original(a, q, *args, **kwargs)

  np.quantile = quantile
  try:
    yield
  finally:
    np.quantile = original

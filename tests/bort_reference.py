"""The authors' Bort formulas, written independently on W (rows = output units).

Shared by the optimizer tests; needs only numpy.
"""

import numpy as np


def as_w(kernel, n_out_axes):
  """The paper's W (out, fan_in) of a Flax kernel, in float64 numpy."""
  k = np.asarray(kernel, np.float64)
  out = int(np.prod(k.shape[k.ndim - n_out_axes:]))
  return k.reshape(-1, out).T


def reference_delta(w, c, mode):
  """Δ(W) of every mode of the authors' code; c is a float or 'ada'."""
  if c == "ada":
    c = np.mean(np.linalg.norm(w, axis=1)) ** 2
  eye_rows, eye_cols = np.eye(w.shape[0]), np.eye(w.shape[1])
  ww, wtw = w @ w.T, w.T @ w
  return {
      "l2-full": ww @ w - c * w,
      "l2-row": (ww * eye_rows) @ w - c * w,
      "l2-col": w @ (wtw * eye_cols) - c * w,
      "l1-fullrow": np.sign(ww - c * eye_rows) @ w,
      "l1-fullcol": w @ np.sign(wtw - c * eye_cols),
      "l1-row": (np.sign(ww - c * eye_rows) * eye_rows) @ w,
      "l1-col": w @ (np.sign(wtw - c * eye_cols) * eye_cols),
  }[mode]

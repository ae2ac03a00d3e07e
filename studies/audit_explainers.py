r"""How Table 3's SAT comparison and Fig. 6c's synthesis move with the choices
the paper leaves open, on trained SGD / Bort-S runs (the demo's layout).

    python -m studies.audit_explainers [--workdir runs/quickstart]
        [--out docs/audit_explainers.md]

``WORKDIR/<model>_sgd`` and ``WORKDIR/<model>_bort_sgd`` (``make demo`` writes
them) are explained on the report's test images with the quickstart explain
config.  The first row of each table is the report's own measurement (checked
equal to ``explain.sat``); every other row changes one choice:

* SAT (Algorithm 1): the threshold γ; k scaled to the layer's width
  (64 of 2592 channels in the paper); the binarisation and channel selection
  of the authors' ``TraceTopk`` in zbr17/ExplainAttr, a repository the paper
  does not cite (``Σ_c |S_c| > 3·mean``, k = 256, channels whose maximum lies
  on the map's border skipped).
* Deletion/insertion: one raster tie order instead of the average of random
  ones; the logit instead of the softmax probability; the AUC of that
  repository's ``Metric`` (``explain.normalized_auc``: logit curve divided by
  its first (deletion) or last (insertion) value, plain mean; the report's
  ``table3_logit``), at 28 and at its MNIST step of 10 pixels.
  The paper's Table 3 has negative deletion AUCs (IG, GuidedIG), which a
  probability curve cannot give.
* Fig. 6c: the constant B (the classifier has biases, so the scale of
  ``X_adv`` matters); ``X_adv`` rescaled to the source's L2 norm; k scaled to
  the width; guided backprop gated by the target's forward pass instead of
  the source's; the value ``y_i·B`` with the source's channel maximum.

Differences are Bort-S − SGD with a paired t-interval over the test images
(``bort_jax.report.stats.paired_t``): one run per optimizer, so they
describe these two networks, not the optimizers.
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from bort_jax import explain
from bort_jax import train
from bort_jax.explain import _common
from bort_jax.explain import metrics
from bort_jax.explain import onehot_backtrack
from bort_jax.models import predict
from bort_jax.report import analyses
from bort_jax.report import runs as runs_lib
from bort_jax.report import stats
from experiments import _cli
from experiments.configs import quickstart as quickstart_config

PAPER_CHANNELS, PAPER_K = 2592, 64  # ACNN-Small conv5 on MNIST, Fig. 5
OPTIMIZERS = ("sgd", "bort_sgd")


# --------------------------------------------------------------- SAT variants


def relative_binarize(gamma):
  return lambda signals: explain.binarize(signals, gamma)


def mean_binarize(signals, scale=3.0):
  """TraceTopk's mask: ``Σ_c |S_c|`` above ``scale`` times its image mean."""
  magnitude = jnp.sum(jnp.abs(signals), axis=-1)
  mean = jnp.mean(magnitude, axis=(-2, -1), keepdims=True)
  return (magnitude > scale * mean).astype(signals.dtype)


def sat_variant(model, x, layer, k, binarize, skip_border=False):
  """Algorithm 1 with another binarisation, optionally without the channels
  whose maximum lies on the feature map's border (TraceTopk)."""
  index = _common.layer_index(model, layer)
  top_kind = onehot_backtrack.top_conv_kind(model, index)

  def one_image(image):
    z, back = onehot_backtrack.onehot_backtracker(model, image[None], index,
                                                  top_kind)
    _, h, w, c = z.shape
    flat = z.reshape(1, h * w, c)
    y, positions = flat.max(1), jnp.argmax(flat, 1)
    if skip_border:
      row, col = positions // w, positions % w
      inside = (row > 0) & (row < h - 1) & (col > 0) & (col < w - 1)
      y = jnp.where(inside, y, -jnp.inf)
    y_top, channels = jax.lax.top_k(y, k)
    positions = jnp.take_along_axis(positions, channels, 1)
    signals = jax.vmap(back, in_axes=(1, 1, None), out_axes=1)(
        channels, positions, jnp.ones((1,), z.dtype))
    y_top = jnp.where(jnp.isfinite(y_top), y_top, 0.0)
    return jnp.einsum("k,khw->hw", y_top[0], binarize(signals[0]))

  return np.asarray(jax.jit(lambda images: jax.lax.map(one_image, images))(x))


def deletion_rows(model, x, saliency, ecfg):
  """{metric variant: (deletion AUCs, insertion AUCs)} of one map."""
  run = lambda **kw: explain.deletion_insertion(
      model, x, saliency, **{"step": ecfg.deletion_step,
                             "tie_orders": ecfg.deletion_tie_orders, **kw})
  prob, raster, step10 = run(), run(tie_orders=1), run(step=10)
  auc = lambda r: (np.asarray(r.deletion_auc), np.asarray(r.insertion_auc))
  authors = lambda r: (explain.normalized_auc(r.deletion_logit, "deletion"),
                       explain.normalized_auc(r.insertion_logit, "insertion"))
  return {"report: softmax prob., RISE AUC, random tie orders": auc(prob),
          "one raster tie order": auc(raster),
          "logit, RISE AUC": (np.asarray(metrics.rise_auc(prob.deletion_logit)),
                              np.asarray(metrics.rise_auc(
                                  prob.insertion_logit))),
          "authors' AUC (logit / peak, mean), step 28": authors(prob),
          "authors' AUC, step 10": authors(step10)}


def table3_rows(models, x, layer, ecfg):
  """[(SAT variant, metric variant, {optimizer: (deletion, insertion)})]."""
  channels = int(models["sgd"].features(x[:1], layer).shape[-1])
  k = min(ecfg.k, channels)
  k_width = max(1, round(PAPER_K * channels / PAPER_CHANNELS))
  variants = {
      f"report: γ={ecfg.sat_gamma:g} of the peak, k={k}":
          (k, relative_binarize(ecfg.sat_gamma), False),
      **{f"γ={g:g}": (k, relative_binarize(g), False)
         for g in (0.1, 0.25, 0.75)},
      f"k={k_width} (64 of 2592 scaled to {channels} channels)":
          (k_width, relative_binarize(ecfg.sat_gamma), False),
      "authors' mask Σ|S|>3·mean": (k, mean_binarize, False),
      f"authors' TraceTopk: k={min(256, channels)}, Σ|S|>3·mean, no border "
      "peaks": (min(256, channels), mean_binarize, True),
  }
  rows = []
  for i, (name, (kv, binarize, border)) in enumerate(variants.items()):
    per_opt = {}
    for opt, model in models.items():
      saliency = sat_variant(model, x, layer, kv, binarize, border)
      if i == 0:
        reported = np.asarray(explain.sat(model, x, layer=layer, k=k,
                                          B=ecfg.B, gamma=ecfg.sat_gamma))
        np.testing.assert_allclose(saliency, reported, rtol=1e-5, atol=1e-4)
        per_opt[opt] = deletion_rows(model, x, saliency, ecfg)
      else:
        per_opt[opt] = {"report: softmax prob., RISE AUC, random tie orders":
                        _report_metric(model, x, saliency, ecfg)}
    for metric in per_opt["sgd"]:
      rows.append((name, metric, {o: per_opt[o][metric] for o in per_opt}))
  return rows


def _report_metric(model, x, saliency, ecfg):
  r = explain.deletion_insertion(model, x, saliency, step=ecfg.deletion_step,
                                 tie_orders=ecfg.deletion_tie_orders)
  return np.asarray(r.deletion_auc), np.asarray(r.insertion_auc)


# -------------------------------------------------------------- Fig. 6c rows


def fig6c_rows(models, x, labels, layer, ecfg):
  """[(variant, {optimizer: per-pair 0/1 "classified as the target's class"})]."""
  sources, targets = analyses.adversarial_pairs(labels,
                                                ecfg.adversarial_pairs)
  xs, xt = x[sources], x[targets]
  channels = int(models["sgd"].features(x[:1], layer).shape[-1])
  k = min(ecfg.k, channels)
  k_width = max(1, round(PAPER_K * channels / PAPER_CHANNELS))
  norm = lambda a: np.linalg.norm(np.asarray(a).reshape(len(a), -1), axis=1)
  rows = {}
  for opt, model in models.items():
    target_class = np.asarray(predict(model, xt))
    fooled = lambda adv: (np.asarray(predict(model, adv))
                          == target_class).astype(np.float64)
    synth = lambda **kw: explain.synthesize_adversarial(
        model, xs, xt, layer=layer, **{"k": k, "B": ecfg.B, **kw})
    report = synth()
    np.testing.assert_allclose(  # the host-built Z_tr is the explainer's
        explain.reconstruct(model, xs, layer=layer, features=_synthesis_map(
            model, xs, xt, layer, k, ecfg.B)), report, rtol=1e-4, atol=1e-4)
    out = {f"report: B={ecfg.B:g}, k={k}, gated by the source": report}
    out.update({f"B={b:g}": synth(B=b) for b in (0.1, 10.0, 100.0)})
    out["X_adv rescaled to ‖X_s‖"] = report * (norm(xs) / norm(report))[
        :, None, None, None]
    out[f"k={k_width} (scaled to the width)"] = synth(k=k_width)
    out["gated by the target's forward pass"] = explain.reconstruct(
        model, xt, layer=layer, features=_synthesis_map(model, xs, xt, layer,
                                                        k, ecfg.B))
    out["value y_i·B with y of the source"] = explain.reconstruct(
        model, xs, layer=layer, features=_synthesis_map(
            model, xs, xt, layer, k, ecfg.B, value_of_source=True))
    for name, adv in out.items():
      rows.setdefault(name, {})[opt] = fooled(adv)
    rows.setdefault("(source's class kept, report)", {})[opt] = (
        np.asarray(predict(model, report))
        == np.asarray(predict(model, xs))).astype(np.float64)
  return list(rows.items())


def _synthesis_map(model, xs, xt, layer, k, B, value_of_source=False):
  """Z_tr of Appendix A.5: the target's top-k channels, y_i·B at the
  source's peak of each (y_i the target's channel maximum, or the source's:
  A.5 writes y_i without saying whose)."""
  zs, zt = np.asarray(model.features(xs, layer)), np.asarray(
      model.features(xt, layer))
  n, h, w, c = zs.shape
  out = np.zeros((n, h * w, c), np.float32)
  for b in range(n):  # a handful of pairs: host loop over pairs, not pixels
    y = zt[b].reshape(-1, c).max(0)
    channels = np.argsort(-y, kind="stable")[:k]
    value = zs[b].reshape(-1, c).max(0) if value_of_source else y
    out[b, zs[b].reshape(-1, c)[:, channels].argmax(0), channels] = (
        value[channels] * B)
  return out.reshape(n, h, w, c)


# ------------------------------------------------------------------- output


def _interval(bort, base, better, seed):
  del better, seed  # the interval is two-sided and has no resampling
  bort, base = np.asarray(bort, np.float64), np.asarray(base, np.float64)
  low, high = stats.t_interval(*stats.paired_t(bort - base))
  return (f"{base.mean():.3f} → {bort.mean():.3f}, Δ "
          f"{np.mean(bort - base):+.3f} [{low:+.3f}, {high:+.3f}]")


def markdown(results, ecfg, command) -> str:
  lines = ["# Audit: Table 3 (SAT) and Fig. 6c under the paper's open choices",
           "", f"`{command}` — {ecfg.num_images} test images, "
           f"{ecfg.adversarial_pairs} adversarial pairs; SGD → Bort-S means, "
           "Δ = Bort-S − SGD with its 95% paired t-interval over images.", ""]
  for label, (t3, f6) in results.items():
    lines += [f"## {label}: SAT deletion / insertion (Table 3)", "",
              "| SAT map | metric | deletion (lower is better) | "
              "insertion (higher is better) |", "|---|---|---|---|"]
    for sat_name, metric, values in t3:
      (db, ib), (ds, is_) = values["bort_sgd"], values["sgd"]
      lines.append(f"| {sat_name} | {metric} | "
                   f"{_interval(db, ds, 'lower', ecfg.seed)} | "
                   f"{_interval(ib, is_, 'higher', ecfg.seed)} |")
    lines += ["", f"## {label}: adversarial synthesis (Fig. 6c)", "",
              "| variant | SGD: classified as the target's class | Bort-S |",
              "|---|---:|---:|"]
    for name, values in f6:
      lines.append(f"| {name} | {int(values['sgd'].sum())} of "
                   f"{values['sgd'].size} | {int(values['bort_sgd'].sum())} "
                   f"of {values['bort_sgd'].size} |")
    lines.append("")
  return "\n".join(lines)


def main(argv=None):
  parser = _cli.ArgumentParser(__doc__)
  parser.add_argument("--workdir", default="runs/quickstart",
                      help="folder with <model>_sgd and <model>_bort_sgd runs")
  parser.add_argument("--out", default=None,
                      help="also write the markdown here")
  args = parser.parse_args(argv)
  workdir = args.workdir
  ecfg = quickstart_config.explain_config()
  results = {}
  for model_name in quickstart_config.get_config().models:
    loaded = {o: train.load_trained(os.path.join(workdir, f"{model_name}_{o}"))
              for o in OPTIMIZERS}
    models = {o: m for o, (m, _) in loaded.items()}
    config = loaded["sgd"][1]
    x, labels, _ = runs_lib.test_images(config, ecfg.num_images)
    layer = runs_lib.paper_layer(models["sgd"])
    label = f"{runs_lib.model_key(config)[1]} ({layer})"
    results[label] = (table3_rows(models, x, layer, ecfg),
                      fig6c_rows(models, x, labels, layer, ecfg))
  text = markdown(results, ecfg, " ".join(
      ["python -m studies.audit_explainers",
       *(sys.argv[1:] if argv is None else argv)]))
  _cli.print_and_write(text, args.out)


if __name__ == "__main__":
  main()

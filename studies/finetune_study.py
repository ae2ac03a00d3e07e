"""Bort-S fine-tuning of SGD-trained networks, at CPU scale (docs/finetune.md).

  python -m studies.finetune_study --out_dir /tmp/finetune_study \
      --docs_dir docs [--seeds 0,1,2] [--models lenet,acnn_small_mnist]

The question: starting from an SGD-trained network, how many epochs of Bort-S
fine-tuning bring Fig. 3a / 3b / 4 to what Bort-S from scratch reaches, and what
does accuracy do meanwhile? On digits, with the demo's Table 1 recipe (lr 0.01
constant, weight decay 0.01, no momentum, batch 32, λ 0.1; LeNet at full width,
ACNN-Small x0.125 with ``min_channels=8``), per model and seed:

- ``sgd``: SGD for 40 epochs (the starting point, fine-tuning epoch 0);
- ``bort``: Bort-S from scratch for 40 epochs (the target);
- ``ft_bort``: ``init_from=`` the ``sgd`` run, Bort-S for ``--epochs`` epochs;
- ``ft_sgd``: ``init_from=`` the ``sgd`` run, SGD for as long (the control:
  what more epochs do without Bort). Both fine-tunings see the same batches.

Measured at the fine-tuning epochs ``MILESTONES`` on every conv layer (the
layers of Fig. 3), as the demo's report does: the Gram of each kernel on its
smaller side (mean |G_ii − 1|; mean |G_ij| / mean G_ii); σ_min/σ_max of the
kernel matrix (square roots of that Gram's extreme eigenvalues); the
reconstruction ratio (Eq. 4, mean over the first 16 test images); the
correlation of the guided-backprop reconstruction from the paper layer with
the input (Fig. 4, same images); top-1 on the 360 test images after every
epoch.

Rule, written before the study was run: fine-tuning *reaches* from-scratch
Bort-S on a metric at the first milestone where its mean over seeds (of the
mean over conv layers) is at least as good as Bort-S from scratch's mean over
seeds: lower for the Gram deviations and the ratio, higher for σ_min/σ_max and
the correlation.
"""

from __future__ import annotations

import json
import pathlib
import time

import numpy as np

from experiments import _cli

# The demo's models (experiments/configs/quickstart.py).
OVERRIDES = {"lenet": {"in_channels": 1, "width_multiplier": 1.0},
             "acnn_small_mnist": {"width_multiplier": 0.125,
                                  "min_channels": 8}}
LABELS = {"lenet": "LeNet", "acnn_small_mnist": "ACNN-Small (x0.125)"}
MILESTONES = (0, 1, 2, 4, 8, 16, 24, 40)
# The SGD control is measured more sparsely (its top-1 is read every epoch).
CONTROL_MILESTONES = (0, 4, 16, 40)
NUM_IMAGES = 16
# (key, label, better): the metrics of the rule in the module docstring.
METRICS = (("diag_dev", "|G_ii − 1|", "lower"),
           ("offdiag", "|G_ij| / mean G_ii", "lower"),
           ("sigma_ratio", "σ_min/σ_max", "higher"),
           ("ratio", "reconstruction ratio", "lower"),
           ("correlation", "corr(reconstruction, input)", "higher"))


def train_config(model: str, optimizer: str, seed: int, epochs: float):
  """The demo's Table 1 recipe on digits (batch 32, λ 0.1 for Bort-S)."""
  from bort_jax.train import recipes  # pylint: disable=import-outside-toplevel
  config = recipes.table1("digits", "lenet", optimizer)
  config.model = model
  config.model_overrides = dict(OVERRIDES[model])
  config.batch_size = 32
  config.eval_batch_size = 120
  config.num_epochs = float(epochs)
  config.seed = seed
  config.log_every_steps = 11
  config.checkpoint_every_steps = 10_000  # the last step of each call only
  config.progress = False
  return config


def measure(model, images) -> dict:
  """The Fig. 3a / 3b / 4 numbers of one model, averaged over conv layers
  (and per layer)."""
  # pylint: disable=import-outside-toplevel
  from bort_jax import explain
  from bort_jax.report import analyses, runs
  per_layer = {}
  ratios = explain.reconstruction_ratios(model, images)
  for layer, entries in explain.gram_distribution(model).items():
    gram = analyses.gram_matrix(np.asarray(entries["diag"]),
                                np.asarray(entries["offdiag"]))
    diag = np.diag(gram)
    eig = np.clip(np.linalg.eigvalsh(gram), 0.0, None)
    off = gram[~np.eye(len(gram), dtype=bool)]
    per_layer[layer] = {
        "diag_dev": float(np.mean(np.abs(diag - 1.0))),
        "offdiag": float(np.mean(np.abs(off)) / np.mean(diag)) if off.size
                   else float("nan"),
        "sigma_ratio": float(np.sqrt(eig[0] / eig[-1])),
        "ratio": float(np.mean(np.asarray(ratios[layer])))}
  x_hat = explain.reconstruct(model, images, layer=runs.paper_layer(model))
  out = {k: float(np.nanmean([v[k] for v in per_layer.values()]))
         for k in ("diag_dev", "offdiag", "sigma_ratio", "ratio")}
  out["correlation"] = float(np.mean(analyses.correlation(x_hat, images)))
  out["per_layer"] = per_layer
  return out


def _top1_by_epoch(workdir) -> dict:
  from bort_jax.report import runs  # pylint: disable=import-outside-toplevel
  return {round(r["epoch"]): r["top1"] for r in runs.read_metrics(workdir)}


def run_model(model_name: str, seed: int, out: pathlib.Path, epochs: int,
              images, train_epochs: int = 40) -> dict:
  """The four runs of one model and seed, measured at the milestones."""
  from bort_jax import train  # pylint: disable=import-outside-toplevel
  base = out / f"{model_name}_seed{seed}"
  result, timings = {}, {}
  for name, optimizer in (("sgd", "sgd"), ("bort", "bort_sgd")):
    start = time.perf_counter()
    train.train_and_evaluate(
        train_config(model_name, optimizer, seed, train_epochs), base / name)
    timings[name] = time.perf_counter() - start
    model, _ = train.load_trained(base / name)
    result[name] = {**measure(model, images),
                    "top1": _top1_by_epoch(base / name)[train_epochs]}
  for name, optimizer, milestones in (("ft_bort", "bort_sgd", MILESTONES),
                                     ("ft_sgd", "sgd", CONTROL_MILESTONES)):
    start, curve = time.perf_counter(), {0: result["sgd"]}
    for milestone in [m for m in milestones if 0 < m < epochs] + [epochs]:
      config = train_config(model_name, optimizer, seed, milestone)
      config.init_from = str(base / "sgd")
      # A constant learning rate: stopping and resuming at each milestone
      # trains exactly as one call would (same batches, same updates).
      train.train_and_evaluate(config, base / name, allow_config_change=True)
      model, _ = train.load_trained(base / name)
      curve[milestone] = measure(model, images)
    timings[name] = time.perf_counter() - start
    top1 = _top1_by_epoch(base / name)
    if top1[0] != result["sgd"]["top1"]:
      raise AssertionError(f"{base / name}: first eval {top1[0]} differs from "
                           f"its init_from's {result['sgd']['top1']}")
    result[name] = {"milestones": {m: {**v, "top1": top1[m]}
                                   for m, v in curve.items()},
                    "top1": top1}
  result["seconds"] = timings
  return result


def _seed_mean(results, model, run, key, milestone=None):
  values = []
  for per_seed in results[model].values():
    r = per_seed[run]
    values.append(r["milestones"][milestone][key] if milestone is not None
                  else r[key])
  return float(np.mean(values)), float(np.min(values)), float(np.max(values))


def epochs_to_reach(results, model) -> dict:
  """The rule of the module docstring: first milestone where the fine-tuned
  seed mean is at least as good as from-scratch Bort-S's (None: never)."""
  any_seed = next(iter(results[model].values()))
  milestones = sorted(any_seed["ft_bort"]["milestones"])
  reached = {}
  for key, _, better in METRICS + (("top1", "top-1", "higher"),):
    target = _seed_mean(results, model, "bort", key)[0]
    reached[key] = None
    for m in milestones:
      value = _seed_mean(results, model, "ft_bort", key, m)[0]
      if (value <= target) if better == "lower" else (value >= target):
        reached[key] = m
        break
  return reached


def _fmt(stat, digits=3) -> str:
  mean, low, high = stat
  if low == high:
    return f"{mean:.{digits}f}"
  return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def to_markdown(results, seconds, train_epochs=40) -> str:
  lines = [f"Written by `python -m studies.finetune_study` "
           f"({seconds:.0f} s of training and measuring on this machine). "
           f"Each cell: mean over seeds [min, max]; conv layers averaged.",
           ""]
  keys = METRICS + (("top1", "top-1 (360 test images)", "higher"),)
  for model in results:
    seeds = sorted(results[model])
    epochs = max(results[model][seeds[0]]["ft_bort"]["milestones"])
    lines += [f"### {LABELS[model]}", "",
              f"Seeds {', '.join(map(str, seeds))}; {epochs} fine-tuning "
              f"epochs.", "",
              "| run | fine-tuning epochs | " + " | ".join(
                  label for _, label, _ in keys) + " |",
              "|---|---|" + "---|" * len(keys)]
    for run, name in (("sgd", f"SGD ({train_epochs} epochs)"),
                      ("bort", f"Bort-S from scratch ({train_epochs} epochs)")):
      lines.append(f"| {name} | – | " + " | ".join(
          _fmt(_seed_mean(results, model, run, k)) for k, _, _ in keys) +
                   " |")
    any_seed = next(iter(results[model].values()))
    for run, name in (("ft_bort", "SGD → Bort-S"), ("ft_sgd", "SGD → SGD")):
      for m in sorted(any_seed[run]["milestones"]):
        lines.append(f"| {name} | {m} | " + " | ".join(
            _fmt(_seed_mean(results, model, run, k, m)) for k, _, _ in keys)
                     + " |")
    reached = epochs_to_reach(results, model)
    lines += ["", "Fine-tuning epochs until SGD → Bort-S is at least as good "
              "as Bort-S from scratch (seed means): " + "; ".join(
                  f"{label}: {reached[k] if reached[k] is not None else f'not within {epochs}'}"
                  for k, label, _ in keys) + ".", ""]
    layers = next(iter(results[model].values()))["bort"]["per_layer"]
    lines += [f"Per conv layer (seed means) at fine-tuning epoch {epochs}:",
              "", "| layer | run | " + " | ".join(
                  label for _, label, _ in METRICS[:4]) + " |",
              "|---|---|" + "---|" * 4]
    for layer in layers:
      for run, name in (("sgd", "SGD"), ("bort", "Bort-S scratch"),
                        ("ft_bort", "SGD → Bort-S"), ("ft_sgd", "SGD → SGD")):
        cells = []
        for key, _, _ in METRICS[:4]:
          vals = [(r[run]["milestones"][epochs] if run.startswith("ft") else
                   r[run])["per_layer"][layer][key]
                  for r in results[model].values()]
          cells.append(f"{np.mean(vals):.3f}")
        lines.append(f"| {layer} | {name} | " + " | ".join(cells) + " |")
    lines.append("")
  return "\n".join(lines)


def plot(results, path) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  keys = METRICS + (("top1", "top-1", "higher"),)
  fig, axes = plt.subplots(len(results), len(keys),
                           figsize=(3.2 * len(keys), 2.8 * len(results)),
                           squeeze=False)
  for row, model in enumerate(results):
    any_seed = next(iter(results[model].values()))
    for col, (key, label, _) in enumerate(keys):
      ax = axes[row, col]
      for run, name, color in (("ft_bort", "SGD → Bort-S", "C1"),
                               ("ft_sgd", "SGD → SGD", "C0")):
        if key == "top1":  # evaluated after every epoch
          milestones = sorted(any_seed[run]["top1"])
          stats = np.array([[f(v) for f in (np.mean, np.min, np.max)] for v in
                            zip(*[[r[run]["top1"][e] for e in milestones]
                                  for r in results[model].values()])])
        else:
          milestones = sorted(any_seed[run]["milestones"])
          stats = np.array([_seed_mean(results, model, run, key, m)
                            for m in milestones])
        ax.plot(milestones, stats[:, 0], "o-", color=color, label=name, ms=3)
        ax.fill_between(milestones, stats[:, 1], stats[:, 2], color=color,
                        alpha=0.2)
      for run, name, style in (("sgd", "SGD, 40 ep", ":"),
                               ("bort", "Bort-S scratch, 40 ep", "--")):
        ax.axhline(_seed_mean(results, model, run, key)[0], color="k",
                   ls=style, lw=1, label=name)
      ax.set_title(f"{LABELS[model]}: {label}", fontsize=8)
      ax.set_xlabel("fine-tuning epochs", fontsize=8)
      ax.tick_params(labelsize=7)
  axes[0, 0].legend(fontsize=6)
  fig.tight_layout()
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)


MARKERS = ("<!-- finetune_study: begin -->", "<!-- finetune_study: end -->")


def write_between_markers(path: pathlib.Path, text: str) -> None:
  """Replaces what lies between ``MARKERS`` in ``path`` by ``text``."""
  doc = path.read_text()
  if not all(m in doc for m in MARKERS):
    raise ValueError(f"{path} lacks the lines {MARKERS} around the study's "
                     f"tables.")
  start = doc.index(MARKERS[0]) + len(MARKERS[0])
  path.write_text(doc[:start] + "\n" + text.strip() + "\n" +
                  doc[doc.index(MARKERS[1]):])


def _load_results(path: pathlib.Path) -> dict:
  """results.json with its integer keys (seeds, epochs) restored."""
  if not path.exists():
    return {}
  def ints(tree):
    if not isinstance(tree, dict):
      return tree
    return {int(k) if k.lstrip("-").isdigit() else k: ints(v)
            for k, v in tree.items()}
  return ints(json.loads(path.read_text()))


def _csv(text: str) -> list[str]:
  return [item for item in text.split(",") if item]


def main(argv=None):
  parser = _cli.ArgumentParser(__doc__)
  parser.add_argument("--out_dir", required=True,
                      help="Workdirs and results.json.")
  parser.add_argument("--docs_dir", default=None,
                      help="Puts the tables into DOCS/finetune.md (between its "
                      "study markers) and the figure into "
                      "DOCS/figures/finetune_study.png.")
  parser.add_argument("--seeds", type=_csv, default=["0", "1", "2"],
                      help="Training seeds, comma-separated.")
  parser.add_argument("--models", type=_csv,
                      default=["lenet", "acnn_small_mnist"],
                      help="Models (digits layout), comma-separated.")
  parser.add_argument("--epochs", type=int, default=40,
                      help="Fine-tuning epochs.")
  parser.add_argument("--report_only", action="store_true",
                      help="Write the tables and the figure from the (model, "
                      "seed) pairs already in --out_dir/results.json; train "
                      "nothing.")
  parser.add_argument("--train_epochs", type=int, default=40,
                      help="Epochs of the sgd and bort runs (Table 1: 40).")
  args = parser.parse_args(argv)
  # pylint: disable-next=import-outside-toplevel
  from bort_jax.train import compile_cache
  from bort_jax.report import runs  # pylint: disable=import-outside-toplevel
  out = pathlib.Path(args.out_dir).absolute()
  out.mkdir(parents=True, exist_ok=True)
  seeds = [int(s) for s in args.seeds]
  epochs = args.epochs
  images, _, _ = runs.test_images(train_config("lenet", "sgd", 0, 1),
                                  NUM_IMAGES)
  # A rerun with the same --out_dir reuses the (model, seed) pairs already
  # measured there (results.json), so the study can be extended seed by seed.
  done = _load_results(out / "results.json")
  results = {}
  for model in args.models:
    results[model] = {}
    for seed in seeds:
      if args.report_only and seed not in done.get(model, {}):
        continue
      if seed in done.get(model, {}):
        results[model][seed] = done[model][seed]
        continue
      with compile_cache.persistent_cache(str(out / "jax_cache")):
        results[model][seed] = run_model(model, seed, out, epochs, images,
                                          _TRAINargs.epochs)
      print(f"{model} seed {seed}: {results[model][seed]['seconds']}",
            flush=True)
      done.setdefault(model, {})[seed] = results[model][seed]
      (out / "results.json").write_text(json.dumps(done, indent=1))
  seconds = sum(sum(r["seconds"].values()) for per_model in results.values()
                for r in per_model.values())
  text = to_markdown(results, seconds, _TRAINargs.epochs)
  print(text)
  (out / "finetune_study.md").write_text(text)
  plot(results, out / "finetune_study.png")
  if args.docs_dir:
    docs = pathlib.Path(args.docs_dir)
    write_between_markers(docs / "finetune.md", text)
    plot(results, docs / "figures" / "finetune_study.png")


if __name__ == "__main__":
  main()

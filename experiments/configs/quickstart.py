"""`make demo`: the paper's Table 1 recipe, scaled down to run on 2 CPU cores.

Trains LeNet (MNIST layout) with SGD and with Bort-S, 5 paired seeds each, on
the offline ``digits`` dataset (scikit-learn's 8x8 digits laid out as
28x28x1), then runs every explainer of Section 4.2 on every run and writes the
report, whose verdicts are about the optimizers over the seeds.

The one place of the demo's settings (issue 19): they were fixed from cost
measurements, before any verdict under them was seen; a later change is logged
in docs/demo_choices.md with the verdicts before and after.

Seeds, models, epochs and what fits (setting of 2026-12-07):

- 5 seeds per optimizer (``seeds``): the fewest the report accepts for a
  verdict other than "too few runs". Seed s of SGD and of Bort-S share
  initialisation and data order (``bort_jax.report.pipeline``).
- ``make demo`` must finish in 12 minutes (720 s) on 2 cores with its venv
  (41 s). Costs measured before this choice (BENCHMARKS.md, "Seeds"): the
  1-seed demo took 213 s on a quiet machine (train 119 s: 2 LeNet runs of
  ~17 s and 2 ACNN-Small x0.125 runs of ~42 s at 40 epochs; explain 95 s for
  4 runs at 16 images). Explaining runs per run and per image: one LeNet
  seed pair took 32.6 s CPU at 16 images and 111.5 s at 64
  (benchmarks.bench_seeds --parts explain_images), of which fig5's saliency
  maps (~21 s per run) and Table 3's deletion/insertion (~25 s per run) are
  nearly all; the old demo's explain CPU matches its quiet wall time, so CPU
  seconds are taken as quiet wall seconds. Ten LeNet runs explained at 64
  images: ~490 s; ten ACNN-Small runs would add more than that again, so
  **LeNet only** (``models``).
- **40 epochs** (``train.num_epochs``; the paper's). First set to 20 from
  the estimate above (~100 s of training at 20 epochs, ~170 s at 40; whole
  demo ≈ 650 s at 20, ≈ 720 s at 40). The first fresh-clone ``make demo`` at
  20 epochs measured 41 s venv + 369 s demo (train 36 s, explain 330 s):
  training was 3x cheaper than estimated, so the paper's 40 epochs fit
  (≈ +36 s) and were restored for fidelity, not for a verdict; the change and
  the verdicts before and after are logged in docs/demo_choices.md.
- What this costs in fidelity: no ACNN-Small, so no CAM (LeNet has no
  global-pool head) and Fig. 3-6 on a 2-conv network (6 and 16 channels)
  instead of the paper's 5-conv one; the claims are about LeNet on digits
  (1 760 steps of batch 32 per run). ``--config.models="('lenet',
  'acnn_small_mnist')"`` adds ACNN-Small x0.125 (floor 8) back, past the 12
  minutes.

The claims' margin (Table 1) and minimum effects are ``explain.claims``, the
library's defaults (``bort_jax.report.pipeline.claims_config``: values and
rationale, fixed before any verdict; docs/demo_choices.md logs them).

Table 1 recipe (Section 4.1.1) and what changes here; the report prints the
same comparison from the config actually used (``paper_recipe`` vs ``train``):

- learning rate 0.01, constant; weight decay 0.01; Bort λ 0.1; no
  augmentation; no momentum (the paper states none): unchanged.
- dataset MNIST (60 000 images) -> digits (1 437 training images).
- batch size 256 -> 32, so one epoch of digits is 44 steps instead of 5.
- epochs: 40, unchanged (1 760 steps per run; 9 360 on MNIST).
- ACNN-Small, when added back: width x1 -> x0.125 with a floor of 8 channels
  (``min_channels=8``): conv1..conv5 get 8, 8, 36, 108, 324 channels instead
  of 8, 24, 288, 864, 2592. Without the floor, x0.125 gives 1, 3, 36, 108,
  324: conv1's single unit has a Gram with no off-diagonal and conv2's three
  units leave Fig. 3a's unit bootstrap almost nothing to resample. The floor
  widens only those two cheap layers: +3 to +7 % per train step
  (BENCHMARKS.md, measured at b123492). LeNet keeps its full width.
- explainers on 64 test images (figures show 6); Table 1's claim uses all
  360 test images; RISE with 500 masks; IG, GuidedIG and XRAI's inner IG 32
  steps; deletion/insertion 28 pixels per step (28 steps); k = 16 salient
  channels (LeNet's conv2 has 16); 64 adversarial pairs (disjoint pairs of
  test images; their cost is in BENCHMARKS.md, BENCHMARKS.md).
"""

import ml_collections

from bort_jax.report import pipeline
from bort_jax.train import recipes

PAPER_RECIPE = recipes.table1("mnist", "lenet", "bort_sgd")
"""Table 1's recipe (Section 4.1.1); momentum is not stated there, 0 assumed."""

PAPER_TABLE1_MNIST = {
    "lenet": {"sgd": 0.7901, "bort_sgd": 0.8885},
    "acnn_small_mnist": {"sgd": 0.9842, "bort_sgd": 0.9925},
}
"""Top-1 on MNIST from the paper's Table 1, for reference only."""


def train_config() -> ml_collections.ConfigDict:
  """The fields of one training run shared by all four runs: Table 1's Bort-S
  recipe on digits, scaled (the baseline runs get λ = 0; model and optimizer
  are set per run)."""
  config = recipes.table1("digits", "lenet", "bort_sgd")
  config.batch_size = 32
  config.eval_batch_size = 120
  config.num_epochs = 40.0
  config.log_every_steps = 11
  # orthogonality_stats at the last epoch only (every 1000th epoch and the
  # last: any demo length is shorter): the report reads none of the
  # per-epoch ones, and each cost ~0.6 s on a loaded 2-core machine
  # (benchmarks.bench_seeds --parts cache,diagnostics, BENCHMARKS.md).
  config.diagnostics_every_epochs = 1000
  return config


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.models = ("lenet",)
  config.model_overrides = ml_collections.ConfigDict({
      "lenet": {"width_multiplier": 1.0},
      "acnn_small_mnist": {"width_multiplier": 0.125, "min_channels": 8},
  })
  config.optimizers = ("sgd", "bort_sgd")
  config.seeds = 5  # paired seeds per (model, optimizer), from train.seed
  config.paper_recipe = PAPER_RECIPE.to_dict()
  config.train = train_config()
  config.explain = pipeline.explain_config()
  return config

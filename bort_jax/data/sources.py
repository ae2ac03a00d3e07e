"""Dataset names -> `Source`s: tfds (TF-free), IDX directories, digits, synthetic.

Why `tfds.data_source` and not `tfds.load`: `tfds.load` returns a `tf.data.Dataset` and so
needs TensorFlow, a ~600 MB dependency that pins its own numpy and protobuf. A
`tfds.data_source` is a random-access sequence over the ArrayRecord files that
`tfds build --file_format=array_record` writes, and it decodes examples with numpy/PIL,
no TensorFlow. Random access is what a deterministic, resumable, per-process-sharded
loader needs: the loader (`iterator.py`) only keeps (epoch, step) and reads the indices it
computes from the seed, so a checkpoint holds two integers and every process reads a
disjoint shard without coordination. We use plain numpy for that index bookkeeping rather
than grain's sampler because the eval contract (pad the last batch and mask it, identical
batch counts on every process) and a JSON state are a few lines in numpy.
"""

import os

import numpy as np

from bort_jax.data.base import DatasetNotFoundError, Source, check_labels
from bort_jax.data.digits import digits_source
from bort_jax.data.idx import idx_source
from bort_jax.data.synthetic import synthetic_source

TFDS_NAMES = ("mnist", "fashion_mnist", "cifar10", "imagenet2012")
DATASET_NAMES = ("digits", *TFDS_NAMES, "idx:DIR", "synthetic[:NUM_CLASSES]")

# Per-channel mean/std on the 0..255 scale (the usual published statistics).
TFDS_STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
# The split names each tfds dataset has; 'test' means ImageNet's labelled validation set.
TFDS_SPLITS = {
    "mnist": {"train": "train", "test": "test"},
    "fashion_mnist": {"train": "train", "test": "test"},
    "cifar10": {"train": "train", "test": "test"},
    "imagenet2012": {"train": "train", "test": "validation", "validation": "validation"},
}


def _not_prepared_message(name, data_dir, reason):
  where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
  message = (
      f"tfds dataset {name!r} is not prepared in {where!r} ({reason}). Prepare it once in "
      f"the ArrayRecord format, e.g. `tfds build {name} --file_format=array_record "
      f"--data_dir=DIR` (or `tfds.builder({name!r}, data_dir=DIR, file_format="
      f"'array_record').download_and_prepare()`) on a machine with internet and "
      f"tensorflow (most tfds builders need it), copy DIR here, and point this run at it "
      f"with data_dir=DIR or the TFDS_DATA_DIR environment variable. Data already "
      f"prepared as TFRecord converts with `tfds convert_format --dataset_version_dir="
      f"DIR/{name}/VERSION --out_file_format=array_record`.")
  if name == "imagenet2012":
    message += (" ImageNet cannot be downloaded automatically: put ILSVRC2012_img_train.tar "
                "and ILSVRC2012_img_val.tar in the manual download directory "
                "(DIR/downloads/manual, or --manual_dir) before `tfds build`.")
  return message


def tfds_source(name, split, data_dir=None):
  """A `Source` over a prepared tfds dataset, read through `tfds.data_source`."""
  if split not in TFDS_SPLITS[name]:
    raise ValueError(f"{name} has splits {sorted(TFDS_SPLITS[name])}, got {split!r}")
  import tensorflow_datasets as tfds

  try:
    builder = tfds.builder(name, data_dir=data_dir)
    features = builder.info.features
    image_shape = tuple(features["image"].shape)
    fixed = all(d is not None for d in image_shape)
    # Variable-size images (ImageNet) stay encoded: the per-example transform decodes
    # them in its thread, at reduced size when its crop allows (augment.crop_resize).
    decoders = None if fixed else {"image": tfds.decode.SkipDecoding()}
    records = tfds.data_source(name, split=TFDS_SPLITS[name][split], data_dir=data_dir,
                               download=False, decoders=decoders)
    if decoders is not None and len(records):
      try:
        records[0]
      except ModuleNotFoundError:
        # tfds.testing.mock_data makes undecoded records by encoding random images
        # with TensorFlow; without it, read the mock's decoded arrays.
        decoders = None
        records = tfds.data_source(name, split=TFDS_SPLITS[name][split],
                                   data_dir=data_dir, download=False)
  # tfds reports an absent or TFRecord-only dataset as NotImplementedError (no random
  # access), FileNotFoundError or AssertionError depending on what is missing.
  except (NotImplementedError, FileNotFoundError, AssertionError) as error:
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    raise DatasetNotFoundError(_not_prepared_message(name, data_dir, reason)) from None
  mean, std = TFDS_STATS[name]
  num_classes = int(features["label"].num_classes)

  def read(indices):
    examples = [records[int(i)] for i in indices]
    images = [example["image"] for example in examples]
    labels = check_labels(
        f"tfds {name!r} split {split!r}, examples {[int(i) for i in indices[:8]]}"
        f"{'...' if len(indices) > 8 else ''}",
        [np.asarray(example["label"]).tolist() for example in examples], num_classes,
        len(examples))
    if fixed:
      return np.stack(images).astype(np.uint8), labels
    if decoders is None:
      return [np.asarray(image, np.uint8) for image in images], labels
    return [bytes(image) for image in images], labels

  return Source(name=name, num_examples=len(records),
                num_classes=num_classes,
                image_shape=image_shape if fixed else None, channels=image_shape[-1],
                mean=tuple(255 * m for m in mean), std=tuple(255 * s for s in std),
                read=read)


def make_source(name, split, *, data_dir=None, image_shape=None, seed=0):
  """The `Source` for a dataset name; see `DATASET_NAMES`."""
  if not isinstance(name, str):
    raise TypeError(f"dataset name must be a string, got {type(name).__name__}")
  if name == "digits":
    return digits_source(split)
  if name in TFDS_NAMES:
    return tfds_source(name, split, data_dir)
  if name.startswith("idx:"):
    return idx_source(os.path.expanduser(name[len("idx:"):]), split)
  if name == "synthetic" or name.startswith("synthetic:"):
    spec = name[len("synthetic:"):] if ":" in name else "10"
    if not spec.isdigit():
      raise ValueError(f"synthetic takes 'synthetic:NUM_CLASSES', got {name!r}")
    return synthetic_source(split, image_shape=image_shape or (28, 28, 1),
                            num_classes=int(spec), seed=seed)
  raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASET_NAMES)}")

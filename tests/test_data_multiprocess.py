"""Two real JAX processes (CPU, gloo): each loads its own shard; shard_batch assembles them."""

import json
import socket
import subprocess
import sys
import textwrap

import pytest

_WORKER = textwrap.dedent("""
    import json, sys
    import jax
    jax.config.update("jax_num_cpu_devices", 2)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
    import numpy as np
    from jax.experimental import multihost_utils
    from jax.sharding import Mesh
    from bort_jax import data

    mesh = Mesh(np.asarray(jax.devices()).reshape(4), ("data",))
    it = data.load("digits", split="test", batch_size=8, train=False)  # jax's process ids
    local = next(it)
    batch = data.shard_batch(local, mesh)
    labels = multihost_utils.process_allgather(batch["label"], tiled=True)
    print("RESULT", json.dumps({"local": local["label"].tolist(),
                                "global": np.asarray(labels).tolist(),
                                "shape": list(batch["image"].shape)}))
""")


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_read_disjoint_shards_and_assemble_one_global_batch():
  address = f"localhost:{_free_port()}"
  workers = [subprocess.Popen([sys.executable, "-c", _WORKER, address, str(pid)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for pid in range(2)]
  results = []
  for worker in workers:
    out, err = worker.communicate(timeout=180)
    assert worker.returncode == 0, err[-2000:]
    line = next(l for l in out.splitlines() if l.startswith("RESULT "))
    results.append(json.loads(line[len("RESULT "):]))
  first, second = results
  from bort_jax import data
  expected = next(data.load("digits", split="test", batch_size=16, train=False))["label"]
  # Eval shards are every other example: process 0 reads 0, 2, 4, ..., process 1 1, 3, ...
  assert first["local"] == expected[0::2].tolist()
  assert second["local"] == expected[1::2].tolist()
  # The global array is the processes' batches concatenated in process order.
  assert first["global"] == second["global"] == first["local"] + second["local"]
  assert first["shape"] == [16, 28, 28, 1]

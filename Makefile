PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo venv bench lower-bounds clean

venv: $(STAMP)

# The package with its extras, resolved by pip from its declared dependencies and pinned by
# the lock: a missing declaration fails here or in tests/test_packaging.py.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.txt -e ".[all,test]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

demo: $(STAMP)
	$(BIN)/python -m experiments.quickstart

bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench_optimizer
	$(BIN)/python -m benchmarks.bench_train
	$(BIN)/python -m benchmarks.bench_conv

# The base dependencies' lower bounds (pyproject.toml): the flax-free optimizer tests in a
# throwaway venv (jax 0.4.30 has no jax_num_cpu_devices, so without tests/conftest.py).
LOWER := /tmp/bort_jax_lower_bounds
lower-bounds:
	rm -rf $(LOWER) && $(PY) -m venv $(LOWER)
	$(LOWER)/bin/python -m pip install -q "jax==0.4.30" "jaxlib==0.4.30" "optax==0.2.4" \
	    "numpy==1.24.4" "chex==0.1.88" pytest absl-py
	PYTHONPATH=$(CURDIR) $(LOWER)/bin/python -m pytest -q -p no:cacheprovider --noconftest \
	    tests/test_optim_layouts.py tests/test_optim_aliases.py

clean:
	rm -rf $(VENV) runs .pytest_cache

# One command sets everything up and runs the main job (`make demo`); one sets up and runs the tests
# (`make test`). The CPU build of torch is pinned and installed first so the range in pyproject.toml is
# already met and pip never pulls the CUDA packages.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-lowest bench clean generate-samples

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/eventlm demo --out demo_out

test: $(STAMP)
	$(PY) -m pytest -q

# The lowest versions pyproject.toml allows, in their own venv (.venv-lowest), and a quick part of
# the suite on them: checks the declared dependency floors. Not part of `make test`.
test-lowest:
	.ci/lowest-versions

bench: $(STAMP)
	$(PY) benchmarks/io.py --update-docs
	$(PY) benchmarks/tokenize.py --update-docs
	$(PY) benchmarks/train.py --update-docs
	$(PY) benchmarks/train_default.py --update-docs
	$(PY) benchmarks/score.py --update-docs
	$(PY) benchmarks/gpu.py --update-docs  # without CUDA: one line, nothing measured, status 0

# Regenerates the bundled samples in data/ (needs `pip install -e .[generate]`; pythia8mc compiles
# from source, about 35 minutes on 2 cores). Not part of CI.
generate-samples: $(STAMP)
	$(PY) -m pip install -q -e ".[generate]"
	$(PY) -m eventlm.generate.bundle --out data

clean:
	rm -rf $(VENV) .venv-lowest demo_out .pytest_cache

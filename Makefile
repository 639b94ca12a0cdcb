# One command sets everything up and runs the main job (`make demo`); one sets up and runs the tests
# (`make test`). The CPU build of torch is pinned and installed first so the range in pyproject.toml is
# already met and pip never pulls the CUDA packages.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-lowest bench clean generate-samples generate-extra validation-signals scaling-data scaling

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
generate-samples: generate-extra
	$(PY) -m eventlm.generate.bundle --out data

generate-extra: $(STAMP)
	$(PY) -c "import pythia8mc, fastjet" 2>/dev/null || $(PIP) install -q -e ".[generate]"

# Generated, never committed (git-ignored /generated/), not part of CI; both keep what is already there
# (a rerun after an interruption generates only what is missing).
# The validation signals: the test signals' families at other masses (zprime_1000, wprime_2500, tttt_H400,
# ttbar_S100_inv, A3_ttbar_500), 3000 events each with data/'s selection, to choose a score on without the
# seven test signals of data/ (about 3 minutes on 2 cores).
validation-signals: generate-extra
	$(PY) -m eventlm.generate.bundle --only validation --out generated/validation_signals --jobs 2

# The large background of the scaling study: SCALING_PARTS independent parts of SCALING_PART_EVENTS events,
# each the mixture of data/background.csv.gz (sigma x acceptance first estimated from data/MANIFEST.json)
# with its own seed (data/'s is 20251122); about 12 minutes per part on 2 free cores. Six parts (312k
# events) hold the 300k point of the study and its validation split.
SCALING_PARTS       ?= 6
SCALING_PART_EVENTS ?= 52000
SCALING_SEED        ?= 20261206
scaling-data: generate-extra
	for i in $$(seq 1 $(SCALING_PARTS)); do \
	  test -f generated/scaling/part$$i/background.csv.gz || \
	  $(PY) -m eventlm.generate.bundle --only background --background-events $(SCALING_PART_EVENTS) \
	    --seed $$(($(SCALING_SEED) + $$i - 1)) --pilot data/MANIFEST.json --jobs 2 \
	    --out generated/scaling/part$$i || exit 1; \
	done

# The scaling study (docs/results.md, "Scaling"): trains the default model on 3k-300k events of the
# parts and three model sizes, evaluates them on data/; reuses the model directories already trained.
scaling: scaling-data
	$(PY) analysis/scaling.py --pool generated/scaling --out runs/scaling --figures docs/figures \
	  --sizes 3000,10000,30000,50000,100000,200000,300000 --models 1x32,2x64,4x128 --model-events 30000

clean:
	rm -rf $(VENV) .venv-lowest demo_out .pytest_cache

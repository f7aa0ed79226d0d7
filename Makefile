# Two commands do everything: `make study` and `make test`; `make measure` and `make analysis` run the CLIs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RESULTS ?= results
STUDY_PROFILE ?= quick
ARGS ?= --help
BENCH_ARGS ?=
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: install test study measure analysis bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

test: install
	$(PY) -m pytest tests
	STUDY_PROFILE=quick $(PY) -m pytest --nbval-lax --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg notebooks

study: install
	$(PY) scripts/run_study.py --profile $(STUDY_PROFILE) --results $(RESULTS)

# make measure ARGS="run resnet50 --quick"; make analysis ARGS="summarize runs/resnet50"
measure: install
	$(PY) -m measure $(ARGS)

analysis: install
	$(PY) -m analysis $(ARGS)

# the measurement overhead, side by side with the peers (CodeCarbon, Zeus) of the bench extra
bench: $(BENCH_STAMP)
	$(PY) benchmarks/overhead.py $(BENCH_ARGS)

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

clean:
	rm -rf $(VENV) $(RESULTS)

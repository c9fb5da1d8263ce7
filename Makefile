# Two commands for users: `make run` (execute the notebooks, cpu profile) and `make test` (unit tests + nbval, quick profile).
# Each target creates the virtual environment first when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PROFILE ?= cpu
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

.PHONY: run test unit lint lab bench pages lock book clean-runs

# The exact versions of the committed run (requirements.lock); `make lock` renews them from requirements.txt.
$(BIN)/activate: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	touch $(BIN)/activate

# Execute every notebook in order, in place, with outputs: what is committed comes from this target. One nbconvert
# process runs them all, each in a fresh kernel (a process per notebook cost a few seconds of start-up each), and
# stops at the first notebook that fails.
run: $(BIN)/activate
	@echo "executing $(NOTEBOOKS) (CXR_PROFILE=$(PROFILE))"
	@CXR_PROFILE=$(PROFILE) $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.timeout=-1 $(NOTEBOOKS)

# make test: every notebook through nbval in the quick profile, each followed by the code of its "Try it yourself"
# exercises and a check of what they produced (tests/exercise_notebooks.py writes these copies to data/exercises/),
# and the unit tests (each test has its own work folder). Two lanes (-j2) share the two cores: the unit tests in one;
# in the other, 01-04 in series order, since each reads what the ones before it wrote (01's index, 02-04's run
# records, 03's feature caches); 05, 06 and 07 only read those, so they take whichever lane is free once 04 is done
# (benchmarks/results.md, "make test in two lanes"). -O prints each part's report when that part ends (GNU make 4 and
# later; an older make, such as macOS's 3.81, runs the parts one after another instead of mixing their lines); -k
# lets the others finish when one fails, and the target fails if any part does.
LANES := $(if $(filter output-sync,$(.FEATURES)),-j2 -O,-j1)
NBVAL := CXR_PROFILE=quick $(BIN)/pytest --nbval-lax --nbval-current-env
EXERCISES := data/exercises
# the longest first, so that the two lanes end together
LATE_NOTEBOOKS := test-notebooks-07 test-notebooks-06 test-notebooks-05
.PHONY: test-unit test-notebooks-01-04 $(LATE_NOTEBOOKS)
test: $(BIN)/activate
	@mkdir -p data
	@$(BIN)/python tests/exercise_notebooks.py $(EXERCISES)
	@echo "unit tests and notebooks, $(if $(findstring -j2,$(LANES)),in two lanes,one part after another); each part's report is printed when it ends"
	@$(MAKE) --no-print-directory $(LANES) -k test-unit $(LATE_NOTEBOOKS)

test-unit: $(BIN)/activate
	@CXR_PROFILE=quick $(BIN)/pytest tests

test-notebooks-01-04: $(BIN)/activate
	@$(NBVAL) $(EXERCISES)/0[1-4]_*.ipynb

$(LATE_NOTEBOOKS): test-notebooks-%: test-notebooks-01-04
	@$(NBVAL) $(EXERCISES)/$*_*.ipynb

unit: $(BIN)/activate
	$(BIN)/pytest tests

# ruff's default rules plus import sorting (pyproject.toml), over helpers, tests and benchmarks.
lint: $(BIN)/activate
	$(BIN)/ruff check .

# Measurements, not tests: the input-pipeline and feature-cache budgets, printed and appended to
# benchmarks/results.md. `$(BIN)/python benchmarks/budgets.py end-to-end` times make test and make run.
bench: $(BIN)/activate
	$(BIN)/python benchmarks/budgets.py

# A static HTML site of the executed notebooks (README as front page, glossary), in _build/html; never executes
# them. Its packages live in their own environment (.venv-book), outside what make run and make test install.
# -W: a warning fails the build.
book: .venv-book/bin/activate
	.venv-book/bin/jupyter-book build . --config docs/_config.yml --toc docs/_toc.yml -W -n --keep-going
	@echo "open _build/html/index.html"

.venv-book/bin/activate: docs/requirements-book.txt
	$(PYTHON) -m venv .venv-book
	.venv-book/bin/pip install --quiet --upgrade pip
	.venv-book/bin/pip install --quiet -r docs/requirements-book.txt
	touch .venv-book/bin/activate

# The README's run times and results table, docs/running.md's table and each notebook's run-time line, rendered
# from benchmarks/run_times.csv and figures/results_table.md (tests/test_committed.py fails when they are stale).
pages: $(BIN)/activate
	$(BIN)/python benchmarks/pages.py

lab: $(BIN)/activate
	$(BIN)/jupyter lab notebooks/

# A fresh environment from requirements.txt's ranges, frozen into requirements.lock (then rerun make test).
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip && .venv-lock/bin/pip install --quiet -r requirements.txt
	{ echo "# Exact versions of the committed run (Python 3.11, Linux x86_64), installed by make run / make test."; \
	  echo "# Made by \`make lock\` from requirements.txt's ranges; requirements.txt keeps the ranges for embedding helpers."; \
	  .venv-lock/bin/pip freeze --exclude-editable | grep -v "^#"; echo "-e ."; } > requirements.lock
	rm -rf .venv-lock

clean-runs:
	rm -rf data/runs/quick

# make install | test | demo | lint | bench  — see README.md
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := demo

.PHONY: install test demo lint bench clean

# torch/torchvision are pinned here (they come from local disk on the project's machines);
# pyproject keeps open ranges so users elsewhere bring their own builds.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev,maskrcnn]'
	touch $(STAMP)

install: $(STAMP)

test: install
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/amodalize synth $(DEMO)/synth --images 40 --seed 1
	$(BIN)/amodalize convert $(DEMO)/synth/modal.json $(DEMO)/convex_r.json --method convex-r --order convex
	$(BIN)/amodalize evaluate $(DEMO)/convex_r.json $(DEMO)/synth/gt.json
	$(BIN)/amodalize visualize $(DEMO)/convex_r.json $(DEMO)/pictures --images 1,2,3
	@echo "demo pictures: $(DEMO)/pictures"

lint: install
	$(BIN)/ruff check amodalize tests scripts

bench: install
	$(BIN)/python scripts/bench_convert.py

clean:
	rm -rf $(DEMO) .pytest_cache

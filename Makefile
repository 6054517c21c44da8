# make install | test | demo | lint | bench  — see README.md
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := demo

.PHONY: install test demo demo-maskrcnn lint bench clean

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

# synth -> train (cpu-small, ~8 min on 2 cores) -> convert -> evaluate -> pictures.
# Re-running resumes an interrupted training and skips a finished one.
demo: install
	$(BIN)/amodalize synth $(DEMO)/synth-train --images 300 --seed 100
	$(BIN)/amodalize synth $(DEMO)/synth-test --images 100 --seed 999 --render
	test -f $(DEMO)/run/.done || { \
	  $(BIN)/amodalize train $(DEMO)/synth-train/modal.json --config configs/pcnet_m/cpu-small.yaml \
	    --out $(DEMO)/run $$(test -f $(DEMO)/run/checkpoint.pt && echo --resume) && touch $(DEMO)/run/.done; }
	$(BIN)/amodalize convert $(DEMO)/synth-test/modal.json $(DEMO)/convex_r.json --method convex-r --order convex
	$(BIN)/amodalize convert $(DEMO)/synth-test/modal.json $(DEMO)/pcnet.json --checkpoint $(DEMO)/run/checkpoint.pt \
	  --order-th 0.3 --amodal-th 0.35
	$(BIN)/amodalize evaluate $(DEMO)/convex_r.json $(DEMO)/synth-test/gt.json
	$(BIN)/amodalize evaluate $(DEMO)/pcnet.json $(DEMO)/synth-test/gt.json
	$(BIN)/amodalize visualize $(DEMO)/pcnet.json $(DEMO)/pictures --images 1,2,3 --images-dir $(DEMO)/synth-test/images
	@echo "demo pictures: $(DEMO)/pictures; training run: $(DEMO)/run (val_grid.png)"

# Table 4 of the paper on synth data: Mask R-CNN (mnv3-fpn, CPU) trained on raw / convex-r / pcnet /
# GT labels of the same 300 rendered images, amodal mask AP on 100 held-out ones (~35 min on 2 cores).
MR := $(DEMO)/maskrcnn
demo-maskrcnn: install
	$(BIN)/amodalize synth $(MR)/train --images 300 --seed 300 --size 160 --objects 2,4 --render
	$(BIN)/amodalize synth $(MR)/test --images 100 --seed 301 --size 160 --objects 2,4 --render
	test -f $(MR)/pcnet-run/.done || { \
	  $(BIN)/amodalize train $(MR)/train/modal.json --config configs/pcnet_m/cpu-small.yaml \
	    --out $(MR)/pcnet-run $$(test -f $(MR)/pcnet-run/checkpoint.pt && echo --resume) && touch $(MR)/pcnet-run/.done; }
	mkdir -p $(MR)/labels
	$(BIN)/amodalize convert $(MR)/train/modal.json $(MR)/labels/raw.json --method raw --order convex
	$(BIN)/amodalize convert $(MR)/train/modal.json $(MR)/labels/convex-r.json --method convex-r --order convex
	$(BIN)/amodalize convert $(MR)/train/modal.json $(MR)/labels/pcnet.json --checkpoint $(MR)/pcnet-run/checkpoint.pt \
	  --order-th 0.3 --amodal-th 0.35
	cp $(MR)/train/gt.json $(MR)/labels/gt-amodal.json
	$(BIN)/amodalize maskrcnn compare $(MR)/labels/raw.json $(MR)/labels/convex-r.json $(MR)/labels/pcnet.json \
	  $(MR)/labels/gt-amodal.json --gt $(MR)/test/gt.json --images-dir $(MR)/train/images \
	  --gt-images-dir $(MR)/test/images --out $(MR)/compare --model mnv3-fpn --iters 800 --device cpu

lint: install
	$(BIN)/ruff check amodalize tests scripts

bench: install
	$(BIN)/python scripts/bench_train.py
	$(BIN)/python scripts/bench_convert.py $$(test -f $(DEMO)/run/checkpoint.pt && echo --checkpoint $(DEMO)/run/checkpoint.pt)

clean:
	rm -rf $(DEMO) .pytest_cache

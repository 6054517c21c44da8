# make install | test | test-fast | demo | demo-scene | demo-maskrcnn[-real] | model | gpu-check | lint | bench  — see README.md
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := demo

.PHONY: install test test-fast demo demo-scene demo-maskrcnn demo-maskrcnn-real model gpu-check lint bench clean

# torch/torchvision are pinned here (they come from local disk on the project's machines);
# pyproject keeps open ranges so users elsewhere bring their own builds.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev,maskrcnn]'
	touch $(STAMP)

# The annotation tools' own readers (amodalize[interop]) in an environment of their own: datumaro
# and label-studio-converter pin older OpenCV and Pillow than the project's, and Ultralytics'
# OpenCV needs libGL, so it comes without its dependencies (those it trains with are listed). Its
# torch and torchvision are the project's (a .pth file puts .venv's packages after its own): a
# torch of its own would be another 1-3 GB, and a CPU torch beside PyPI's torchvision cannot load
# torchvision's operators. tests/test_interop.py runs them there and skips where it is absent; a
# failed install only makes those tests skip.
INTEROP := .venv-interop
$(INTEROP)/.installed: pyproject.toml $(STAMP)
	rm -rf $(INTEROP)
	{ $(PYTHON) -m venv $(INTEROP) \
	  && $(BIN)/python -c "import site; print(site.getsitepackages()[0])" \
	     > "$$($(INTEROP)/bin/python -c 'import site; print(site.getsitepackages()[0])')/amodalize-venv.pth" \
	  && $(INTEROP)/bin/pip install -q --disable-pip-version-check label-studio-converter==0.0.59 datumaro==1.13.12 \
	  && $(INTEROP)/bin/pip install -q --disable-pip-version-check --no-deps ultralytics==8.4.190 \
	  && $(INTEROP)/bin/pip install -q --disable-pip-version-check matplotlib scipy psutil polars ultralytics-thop requests \
	  && $(INTEROP)/bin/python -c "import datumaro, label_studio_converter, ultralytics, torchvision.ops" \
	  && touch $@; } || { rm -rf $(INTEROP); echo "the interop readers did not install: tests/test_interop.py will skip"; }

install: $(STAMP) $(INTEROP)/.installed

test: install
	$(BIN)/python -m pytest -q

# The edit loop: every test but those marked slow (training loops, torchrun, Mask R-CNN, the
# install, the scripts, the annotation tools' readers); `make test` runs them all.
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

# synth -> train (cpu-small, ~8 min on 2 cores) -> convert (own model, shipped model, Convex^R) -> evaluate
# -> pictures. No thresholds are passed: convert takes them from the checkpoint's calibration.
# Re-running resumes an interrupted training and skips a finished one.
demo: install $(DEMO)/run/.done
	$(BIN)/amodalize synth $(DEMO)/synth-test --images 100 --seed 999 --render
	$(BIN)/amodalize convert $(DEMO)/synth-test/modal.json $(DEMO)/convex_r.json --method convex-r --order convex
	$(BIN)/amodalize convert $(DEMO)/synth-test/modal.json $(DEMO)/pcnet.json --checkpoint $(DEMO)/run/checkpoint.pt
	$(BIN)/amodalize convert $(DEMO)/synth-test/modal.json $(DEMO)/shipped.json
	$(BIN)/amodalize evaluate $(DEMO)/convex_r.json $(DEMO)/synth-test/gt.json
	$(BIN)/amodalize evaluate $(DEMO)/shipped.json $(DEMO)/synth-test/gt.json
	$(BIN)/amodalize evaluate $(DEMO)/pcnet.json $(DEMO)/synth-test/gt.json
	$(BIN)/amodalize visualize $(DEMO)/pcnet.json $(DEMO)/pictures --images 1,2,3 --images-dir $(DEMO)/synth-test/images
	@echo "demo pictures: $(DEMO)/pictures; training run: $(DEMO)/run (val_grid.png)"

$(DEMO)/synth-train/modal.json: | $(STAMP)
	$(BIN)/amodalize synth $(DEMO)/synth-train --images 300 --seed 100 --render

# PCNet-M cpu-small; an interrupted run resumes, a finished one is kept.
$(DEMO)/run/.done: $(DEMO)/synth-train/modal.json
	$(BIN)/amodalize train $(DEMO)/synth-train/modal.json --config cpu-small \
	  --out $(DEMO)/run $$(test -f $(DEMO)/run/checkpoint.pt && echo --resume)
	touch $@

# PCNet-C cpu-small on the rendered training scenes (~12 min on 2 cores).
$(DEMO)/run-c/.done: $(DEMO)/synth-train/modal.json
	$(BIN)/amodalize train --model pcnet-c $(DEMO)/synth-train/modal.json --images-dir $(DEMO)/synth-train/images \
	  --config pcnet_c/cpu-small --out $(DEMO)/run-c $$(test -f $(DEMO)/run-c/checkpoint.pt && echo --resume)
	touch $@

# Scene de-occlusion: PCNet-C quality on held-out scenes (hole L1 vs mean-colour fill and cv2.inpaint,
# on training-recipe holes and on true hidden parts), layers of 3 held-out scenes, and a recomposition
# with two objects deleted beside the modal-only baseline.
demo-scene: install $(DEMO)/run/.done $(DEMO)/run-c/.done
	$(BIN)/amodalize synth $(DEMO)/synth-test --images 100 --seed 999 --render
	$(BIN)/python scripts/bench_content.py --checkpoint $(DEMO)/run-c/checkpoint.pt \
	  --data $(DEMO)/synth-test/modal.json --images-dir $(DEMO)/synth-test/images
	$(BIN)/python scripts/bench_scene.py --checkpoint-c $(DEMO)/run-c/checkpoint.pt
	$(BIN)/amodalize deocclude $(DEMO)/synth-test/modal.json $(DEMO)/layers --images-dir $(DEMO)/synth-test/images \
	  --checkpoint-m $(DEMO)/run/checkpoint.pt --checkpoint-c $(DEMO)/run-c/checkpoint.pt --images 1,2,3
	$(BIN)/amodalize recompose $(DEMO)/layers --image 1 -o $(DEMO)/scene-same.png
	$(BIN)/amodalize recompose $(DEMO)/layers --image 1 --delete 2 --delete 5 -o $(DEMO)/scene-deleted.png \
	  --compare $(DEMO)/scene-compare.png
	@echo "layers: $(DEMO)/layers; recomposition: $(DEMO)/scene-compare.png"

# Do the labels train a better model? (README, "amodalize maskrcnn") Mask R-CNN (mnv3-fpn, CPU) on
# 300 rendered 128-px scenes: one model trained on the raw (modal) labels at lr 0.02, then its box
# and mask heads fine-tuned 1,000 iterations at lr 0.005 on each label source (raw, Convex^R,
# PCNet-M with the shipped model and defaults, ground truth), 2 seeds each, the backbone and
# proposals kept from the start; AP and mean IoU on the occluded objects of 100 held-out scenes in
# compare/compare.json. demo-maskrcnn: procedural shapes; demo-maskrcnn-real: the COCOA demo's real
# object outlines (../shared) at twice their share of the scene, as large as the procedural shapes.
# Both start from 1,500 iterations: the start begins to detect between 1,000 and 1,200 (held-out
# box AP 5.0% at 1,000, 17.6% at 1,200, 19.1% at 1,400), and a 600-iteration start that learned on
# one host stayed at 1.3% on another (docs/measurements.md); compare refuses a start under 5%.
# ~40 and ~46 min on 2 cores.
MR := $(DEMO)/maskrcnn
COCOA_DEMO := ../shared/data/cocoa-demo
COCOA_SHAPES = $(foreach k,1 2 3 4 5,--shapes-from $(COCOA_DEMO)/$(k).json)
# $(call maskrcnn_check,folder,iterations of the shared start,extra synth options)
define maskrcnn_check
	$(BIN)/amodalize synth $(1)/train --images 300 --seed 300 --size 128 --objects 4,7 --render $(3)
	$(BIN)/amodalize synth $(1)/test --images 100 --seed 301 --size 128 --objects 4,7 --render $(3)
	mkdir -p $(1)/labels
	$(BIN)/amodalize convert $(1)/train/modal.json $(1)/labels/raw.json --method raw --order convex
	$(BIN)/amodalize convert $(1)/train/modal.json $(1)/labels/convex-r.json --method convex-r --order convex
	$(BIN)/amodalize convert $(1)/train/modal.json $(1)/labels/pcnet.json
	cp $(1)/train/gt.json $(1)/labels/gt-amodal.json
	$(BIN)/amodalize maskrcnn compare $(1)/labels/raw.json $(1)/labels/convex-r.json $(1)/labels/pcnet.json \
	  $(1)/labels/gt-amodal.json --gt $(1)/test/gt.json --images-dir $(1)/train/images \
	  --gt-images-dir $(1)/test/images --out $(1)/compare --model mnv3-fpn --device cpu \
	  --base $(1)/labels/raw.json --base-iters $(2) --base-lr 0.02 --heads-only --iters 1000 --lr 0.005 --seeds 2
endef
demo-maskrcnn: install
	$(call maskrcnn_check,$(MR),1500)

demo-maskrcnn-real: install
	@test -f $(COCOA_DEMO)/5.json || { echo "demo-maskrcnn-real needs $(COCOA_DEMO) (the real COCOA demo images)"; exit 1; }
	$(call maskrcnn_check,$(MR)/real,1500,$(COCOA_SHAPES) --shapes-scale 2)

# The shipped PCNet-M (amodalize/models/weights/general.*): procedural scenes, the `general` preset
# (cpu-small, 1-3 erasers per sample, 3,000 steps; ~17 min on 2 cores), calibrated; seeded, so the
# same weights file on the same machine.
model: install
	$(BIN)/python scripts/make_model.py --out build/model

# The one prepared GPU check (<= 8 min on one recent NVIDIA GPU): JSON in build/gpu-check/gpu_check.json.
gpu-check: install
	$(BIN)/python scripts/gpu_check.py build/gpu-check

lint: install
	$(BIN)/ruff check amodalize tests scripts

bench: install
	$(BIN)/python scripts/bench_train.py
	$(BIN)/python scripts/bench_convert.py --large $$(test -f $(DEMO)/run/checkpoint.pt && echo --checkpoint $(DEMO)/run/checkpoint.pt)
	test ! -f $(DEMO)/run/checkpoint.pt || $(BIN)/python scripts/bench_defaults.py --checkpoint $(DEMO)/run/checkpoint.pt \
	  --set clean=$(DEMO)/synth-test/modal.json:$(DEMO)/synth-test/gt.json
	test ! -f $(DEMO)/run-c/checkpoint.pt || $(BIN)/python scripts/bench_scene.py --checkpoint-c $(DEMO)/run-c/checkpoint.pt

clean:
	rm -rf $(DEMO) .pytest_cache $(INTEROP)

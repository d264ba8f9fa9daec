# Two entry points for users: `make demo` and `make test`. Everything the tests
# need (venv, Python deps, system packages) is installed from here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench system-deps clean image

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "gpuid needs Python >= 3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(BIN)/gpuid demo

system-deps:
	@bash .ci/system-deps

lint: $(STAMP)
	$(BIN)/ruff check gpuid tests bench
	$(BIN)/ruff format --check gpuid tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict gpuid

unit: $(STAMP) system-deps
	$(BIN)/pytest

test: lint typecheck unit

# The container image as the release builds it (docker buildx; needs a Docker engine):
#   make image                                                  this machine's platform, into Docker
#   make image PLATFORMS=linux/amd64,linux/arm64 PUSH=1 IMAGE=registry.example.com/gpuid
# A multi-platform image can only be pushed; arm64 on amd64 needs QEMU (docs/deploy.md).
VERSION   := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
IMAGE     ?= $(shell sed -n 's/^    newName: //p' deployment/base/kustomization.yaml)
PLATFORMS ?= linux/$(shell uname -m | sed 's/x86_64/amd64/;s/aarch64/arm64/')
image:
	docker buildx build --platform $(PLATFORMS) \
		--build-arg VERSION=$(VERSION) --build-arg REVISION=$$(git rev-parse HEAD) \
		--tag $(IMAGE):$(VERSION) $(if $(PUSH),--push --sbom=true --provenance=mode=max,--load) .

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# Two entry points for users: `make demo` and `make test`. Everything they need (venv, Python
# deps, system packages) is installed from here. The demo installs only gpuid's runtime
# dependencies (read from pyproject.toml), runs gpuid from this checkout, and prints nothing but
# records on stdout (install chatter goes to stderr), so `make demo | jq` works.
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
RUNTIME := $(VENV)/.runtime
DEV     := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench system-deps clean image

$(RUNTIME): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "gpuid needs Python >= 3.11" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) >&2
	@$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt \
		$$($(BIN)/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"])') >&2
	@touch $@

$(DEV): $(RUNTIME)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

demo: $(RUNTIME)
	@PYTHONPATH=$(CURDIR) $(BIN)/python -m gpuid demo

system-deps:
	@bash .ci/system-deps

lint: $(DEV)
	$(BIN)/ruff check gpuid tests bench
	$(BIN)/ruff format --check gpuid tests bench
	$(BIN)/lint-imports

typecheck: $(DEV)
	$(BIN)/mypy --strict gpuid

unit: $(DEV) system-deps
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

bench: $(DEV)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# Two commands a user types: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO_DIR ?= demo_out

export NO_ALBUMENTATIONS_UPDATE := 1
export RAY_USAGE_STATS_ENABLED := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint clean install

install: $(STAMP)

# Reinstall only when the project's metadata changes; a second call reuses the venv.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/faceiqa sample --out $(DEMO_DIR)/sample
	$(VENV)/bin/faceiqa run $(DEMO_DIR)/sample/sample.mp4 --out $(DEMO_DIR)/run --crops --quiet
	$(VENV)/bin/faceiqa report $(DEMO_DIR)/run

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check face_iqa workers pipeline tests bench
	$(VENV)/bin/ruff format --check face_iqa workers pipeline tests bench

clean:
	rm -rf $(DEMO_DIR) .pytest_cache

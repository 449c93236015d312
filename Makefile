# Two set-up commands for a fresh machine: `make demo` and `make test`.
# Each creates (or reuses) .venv and installs what it needs.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo run test bench catalogs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/payrescue demo

run: $(STAMP)
	$(BIN)/payrescue run

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/hadolint Dockerfile
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH)

# Re-extract the gettext catalog after adding or changing a user-visible string.
catalogs: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k _ -k __ -k gettext -k ngettext:1,2 -k lazy_gettext --no-location --sort-output --no-wrap -o locales/messages.pot .
	$(BIN)/pybabel update -i locales/messages.pot -d locales -D messages --no-fuzzy-matching --ignore-obsolete --no-wrap

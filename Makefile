# Two set-up commands for a fresh machine: `make demo` and `make test`.
# Each creates (or reuses) .venv and installs exactly what the lock says: uv.lock holds every
# set (universal, with hashes); requirements/*.txt are its pip-readable exports. `make lock`
# writes both from pyproject's bounds (README: "Upgrading dependencies").
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
LOCKED := $(VENV)/installed-lock.txt
STAMP := $(VENV)/.installed
UV_EXPORT := $(BIN)/uv export --quiet --frozen --no-emit-project --no-default-groups

.PHONY: demo run test bench catalogs messages lock upgrade

# A fresh venv whenever the lock's content changes, so nothing it no longer lists stays behind;
# pip checks every download against the lock's hashes and refuses anything unpinned. The stamp
# is a copy of what was installed: `make lock` rewriting the same content reinstalls nothing.
$(LOCKED): requirements/dev.txt
	cmp -s $< $@ || { $(PY) -m venv --clear $(VENV) \
		&& $(BIN)/python -m pip install -q --require-hashes -r $< && cp $< $@; }
	touch $@

# PayRescue itself, editable, built by the locked setuptools: an isolated build would fetch an
# unpinned one.
$(STAMP): $(LOCKED) pyproject.toml
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

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

# After changing a member text or its translation: the gallery a reviewer reads (and a test
# compares) in docs/messages.de.md and docs/messages.en.md.
messages: $(STAMP)
	$(BIN)/payrescue messages preview --language de > docs/messages.de.md
	$(BIN)/payrescue messages preview --language en > docs/messages.en.md

# After changing pyproject's dependencies: locks what is new, keeps every pin that still fits
# the bounds, and exports the sets that get installed (each file's header says how it was made).
lock: $(STAMP)
	$(BIN)/uv lock $(UV_LOCK_ARGS)
	$(UV_EXPORT) --extra dev --group build -o requirements/dev.txt
	$(UV_EXPORT) --extra postgres --extra redis -o requirements/server.txt
	$(UV_EXPORT) --only-group build -o requirements/build.txt

# The newest versions pyproject's bounds allow; then run the suite and read the changelogs.
upgrade: UV_LOCK_ARGS := --upgrade
upgrade: lock

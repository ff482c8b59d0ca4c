# The only entry point for humans and CI. Every target works on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
comma := ,

.PHONY: run test test-slow conformance lint fmt typecheck bench screenshots dups clean \
	test-integrations test-claude-agent test-openai-agents test-pydantic-ai test-moving-in \
	test-redis-oldest

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

$(VENV): $(STAMP)

run: $(STAMP)
	@echo "threadkeep: chat at http://127.0.0.1:8000/ , dashboard at http://127.0.0.1:8000/dashboard , API docs at http://127.0.0.1:8000/docs"
	THREADKEEP_BOT=seller $(BIN)/threadkeep serve --store sqlite:///./threadkeep.db --host 127.0.0.1 --port 8000

# The suite without the slow multi-process, crash and soak tests (about 6 minutes of tests on this
# 2-core machine); test-slow runs those (about 5); CI runs both (.ci/run), then the framework suites.
test: lint typecheck
	$(BIN)/pytest -m "not slow"

test-slow: $(STAMP)
	$(BIN)/pytest -m slow

conformance: $(STAMP)
	$(BIN)/pytest tests/conformance

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP)
	$(BIN)/mypy

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench

screenshots: $(STAMP)
	THREADKEEP_SCREENSHOTS=$(CURDIR)/docs/screenshots $(BIN)/pytest -m browser tests/web tests/streamlit

dups:
	duplicates --most 40

# ---- framework adapters, each proven by its framework's own tests ----------------------------
# One venv per framework (from PyPI only), one pytest run per suite with that suite's own
# rootdir and config (never threadkeep's filterwarnings=error / --strict-markers). The OpenAI
# Agents SDK's tests come from its sdist, with SQLiteSession re-pointed at ThreadkeepSession;
# OAI_FULL=1 runs its whole file list on every backend (default: all files on SQLite, the
# four core files on memory, Redis and PostgreSQL). Every backend runs over an AsyncStore;
# OAI_PG_API=sync runs PostgreSQL over a sync Store instead.
CLAUDE_SDK := claude-agent-sdk==0.2.184
OAI_VERSION := 0.24.0
PAI_SDK := pydantic-ai-slim==2.68.0
PEERS := langchain-community==0.4.2 langchain-postgres==0.0.19 openai-agents[redis]==$(OAI_VERSION)
INTEG_TOOLS := pytest pytest-timeout anyio mypy
OAI_DIR := tests/integrations/openai_agents
OAI_SDIST := .venv-oai/sdist/openai_agents-$(OAI_VERSION)
OAI_CORE := tests/memory/test_session.py tests/memory/test_session_limit.py \
	tests/test_agent_runner.py tests/test_agent_runner_streamed.py
OAI_FILES := $(shell cat $(OAI_DIR)/files.txt)
OAI_OTHERS := $(if $(OAI_FULL),$(OAI_FILES),$(OAI_CORE))
# $(call oai_run,BACKEND,FILES[,API]): the SDK's tests from its sdist, SQLiteSession re-pointed,
# over an AsyncStore (default) or a Store called from worker threads (API=sync)
oai_run = cd $(OAI_SDIST) && TK_BACKEND=$(1) TK_API=$(or $(3),async) PYTHONPATH=$(CURDIR)/$(OAI_DIR) \
	$(CURDIR)/.venv-oai/bin/python -m pytest -q -p no:cacheprovider -p no:inline_snapshot \
	-p threadkeep_repoint --timeout 120 $(2)

# $(call integ_venv,NAME,EXTRAS,PACKAGES)
define integ_venv
	@test -x .venv-$(1)/bin/python || $(PY) -m venv .venv-$(1)
	.venv-$(1)/bin/python -m pip install --quiet --upgrade pip
	.venv-$(1)/bin/python -m pip install --quiet -e '.[$(2)]' $(3) $(INTEG_TOOLS)
	@touch $@
endef

.venv-claude/.installed: pyproject.toml
	$(call integ_venv,claude,claude_agent$(comma)redis$(comma)postgres,$(CLAUDE_SDK))

.venv-oai/.installed: pyproject.toml
	$(call integ_venv,oai,openai_agents$(comma)redis$(comma)postgres,openai-agents==$(OAI_VERSION) \
		pytest-asyncio pytest-mock inline-snapshot cryptography httpx)
	rm -rf .venv-oai/sdist && mkdir -p .venv-oai/sdist
	.venv-oai/bin/python -m pip download --quiet --no-deps --no-binary :all: \
		-d .venv-oai/sdist openai-agents==$(OAI_VERSION)
	tar xzf .venv-oai/sdist/openai_agents-$(OAI_VERSION).tar.gz -C .venv-oai/sdist
	@touch $@

.venv-pai/.installed: pyproject.toml
	$(call integ_venv,pai,pydantic_ai$(comma)redis$(comma)postgres,$(PAI_SDK))

.venv-peers/.installed: pyproject.toml
	$(call integ_venv,peers,cli$(comma)redis$(comma)postgres,$(PEERS))

test-claude-agent: .venv-claude/.installed
	.venv-claude/bin/mypy src/threadkeep/integrations/claude_agent.py
	cd tests/integrations/claude_agent && $(CURDIR)/.venv-claude/bin/python -m pytest

test-openai-agents: .venv-oai/.installed
	.venv-oai/bin/mypy src/threadkeep/integrations/openai_agents.py
	cd $(OAI_DIR) && $(CURDIR)/.venv-oai/bin/python -m pytest
	$(call oai_run,sqlite,$(OAI_FILES))
	$(call oai_run,memory,$(OAI_OTHERS))
	$(call oai_run,redis,$(OAI_OTHERS))
	$(call oai_run,postgres,$(OAI_OTHERS),$(OAI_PG_API))

test-pydantic-ai: .venv-pai/.installed
	.venv-pai/bin/mypy src/threadkeep/integrations/pydantic_ai.py
	cd tests/integrations/pydantic_ai && $(CURDIR)/.venv-pai/bin/python -m pytest

test-moving-in: .venv-peers/.installed
	.venv-peers/bin/mypy src/threadkeep/importers.py
	cd tests/integrations/peers && $(CURDIR)/.venv-peers/bin/python -m pytest

test-integrations: test-claude-agent test-openai-agents test-pydantic-ai test-moving-in

# the Redis backend on the oldest redis-py it accepts (its drivers and pools use some of
# redis-py's connection internals): its own tests and the conformance suite on Redis
.venv-redis6/.installed: pyproject.toml
	@test -x .venv-redis6/bin/python || $(PY) -m venv .venv-redis6
	.venv-redis6/bin/python -m pip install --quiet -e '.[dev]' 'redis[hiredis]==6.0.0'
	@touch $@

test-redis-oldest: .venv-redis6/.installed
	.venv-redis6/bin/pytest -m "not slow" tests/backends/redis tests/conformance -k redis

clean:
	rm -rf $(VENV) .venv-claude .venv-oai .venv-pai .venv-peers .venv-redis6 .mypy_cache .pytest_cache \
		.ruff_cache build dist

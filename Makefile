# Flywheel: every target installs what it needs into .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
DEMO_HOME := .flywheel/demo

.PHONY: setup demo demo-vision demo-field drill test test-fast bench bench-flywheel lint serve up down clean browser render-libs \
	tools lerobot-tools

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0 -c constraints.txt
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP) render-libs

# Mesa's EGL and OSMesa (Debian's packages), with which MuJoCo renders the simulated robots'
# cameras without a display (services/twin/render.py); installed when missing.
RENDER_LIBS := libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6
render-libs:
	@dpkg -s $(RENDER_LIBS) >/dev/null 2>&1 || \
		apt-get install -y -q --no-install-recommends $(RENDER_LIBS) || \
		{ apt-get update -q && apt-get install -y -q --no-install-recommends $(RENDER_LIBS); } || \
		echo "Mesa's EGL and OSMesa not installed: the simulated robots cannot render their" \
			"cameras (install $(RENDER_LIBS), or run without: FLYWHEEL_SIM_CAMERAS='[]')"

# Several nights of the loop on the embedded default with a simulated fleet of 4 robots,
# from a fresh demo home; prints one row per night. Two of the four robots are the canary
# (one would take more than a shift to give the rollout tests enough episodes).
demo: setup
	rm -rf $(DEMO_HOME)
	FLYWHEEL_HOME=$(DEMO_HOME) FLYWHEEL_AUTO_APPROVE=true FLYWHEEL_ROLLOUT_STAGES='[0.5, 1.0]' \
		$(VENV)/bin/flywheel nightly --nights 5 --robots 4

# The loop with a vision policy: each night's policy reads the robots' front camera besides
# the state (FLYWHEEL_TRAIN_CAMERAS), and sees it in evaluation and on the simulated robots as
# its training frames were made (docs/policies.md). Three nights, then a state policy trained
# afresh on the last night's dataset for as many steps as the vision champion had in all,
# evaluated against the vision champion on the same seeds.
VISION_HOME := .flywheel/demo-vision
VISION_NIGHTS := 3
# Rendering and decoding frames is the budget on a 2-core machine: 1,000 training steps a night
# (a third of the state demo's) on 32 px inputs.
VISION_SETTINGS ?= FLYWHEEL_TRAIN_STEPS=1000 FLYWHEEL_TRAIN_IMAGE_PX=32
VISION_ENV := FLYWHEEL_HOME=$(VISION_HOME) FLYWHEEL_AUTO_APPROVE=true FLYWHEEL_ROLLOUT_STAGES='[0.5, 1.0]' \
	FLYWHEEL_TRAIN_CAMERAS='["front"]' $(VISION_SETTINGS)
JSON_FIELD = $(PY) -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])'
demo-vision: setup
	rm -rf $(VISION_HOME)
	$(VISION_ENV) $(VENV)/bin/flywheel nightly --nights $(VISION_NIGHTS) --robots 4
	@echo "a state policy on the same data, against the vision champion on the same seeds:"
	@dataset=$$($(VISION_ENV) $(VENV)/bin/flywheel dataset build --json | $(JSON_FIELD) id) && \
	steps=$$(($(VISION_NIGHTS) * $$($(VISION_ENV) $(PY) -c \
		'from services.config import Settings; print(Settings().training.train_steps)'))) && \
	version=$$($(VISION_ENV) FLYWHEEL_TRAIN_CAMERAS='[]' FLYWHEEL_TRAIN_STEPS=$$steps \
		$(VENV)/bin/flywheel train --dataset $$dataset --json | $(JSON_FIELD) model_version) && \
	$(VISION_ENV) $(VENV)/bin/flywheel evaluate $$version

# A task without a simulator twin: the fleet works pick-place (which the simulator judges in
# closed loop) and push (FLYWHEEL_FIELD_TASKS: Flywheel may not evaluate it in simulation).
# A fleet manager sets the field gate's thresholds before the first night; each candidate is
# shadowed beside the champion on the next shift and judged on that field evidence the night
# after, and one that passes starts at the canary, where the robots' sequential tests decide
# (docs/shadow.md). The robots film nothing here (cameras off): the demo is about evidence.
FIELD_HOME := .flywheel/demo-field
FIELD_NIGHTS := 6
FIELD_ENV := FLYWHEEL_HOME=$(FIELD_HOME) FLYWHEEL_AUTO_APPROVE=true FLYWHEEL_ROLLOUT_STAGES='[0.5, 1.0]' \
	FLYWHEEL_TASKS='["pick-place", "push"]' FLYWHEEL_FIELD_TASKS='["push"]' FLYWHEEL_SIM_CAMERAS='[]'
TOKEN_OF = sed -n 's/.*(shown once): \(fw_[^ ]*\).*/\1/p'
demo-field: setup
	rm -rf $(FIELD_HOME)
	@admin=$$($(FIELD_ENV) $(VENV)/bin/flywheel users add ada --role admin | $(TOKEN_OF)) && \
	manager=$$($(FIELD_ENV) FLYWHEEL_TOKEN=$$admin $(VENV)/bin/flywheel users add fatima \
		--role fleet-manager | $(TOKEN_OF)) && \
	$(FIELD_ENV) FLYWHEEL_TOKEN=$$manager $(VENV)/bin/flywheel field-gate set \
		--reason "push has no twin: judge it on the fleet" --min-episodes 12 \
		--max-distance-difference 0 --min-agreement 0.5 --min-successes 4
	$(FIELD_ENV) $(VENV)/bin/flywheel nightly --nights $(FIELD_NIGHTS) --robots 4
	@for version in $$($(FIELD_ENV) $(VENV)/bin/flywheel candidates --json | $(PY) -c \
		'import json, sys; print(" ".join(c["model_version"] for c in json.load(sys.stdin) if c["parent_version"]))'); do \
		$(FIELD_ENV) $(VENV)/bin/flywheel shadow report $$version; done
	$(FIELD_ENV) $(VENV)/bin/flywheel field-gate agreement
	$(FIELD_ENV) $(VENV)/bin/flywheel rollout status

# The rollback drill: one night trains a champion, then a deliberately worse candidate goes
# to the canary stage and the rollout controller rolls it back during the next shift.
drill: setup
	rm -rf .flywheel/drill
	FLYWHEEL_HOME=.flywheel/drill FLYWHEEL_AUTO_APPROVE=true $(VENV)/bin/flywheel nightly --nights 1 --robots 4
	FLYWHEEL_HOME=.flywheel/drill $(VENV)/bin/flywheel drill --robots 8 --episodes 8

# Debian's Chromium for the browser tests (tests/dashboards); without it they skip and say why.
browser:
	@command -v chromium >/dev/null || apt-get install -y -q chromium || \
		{ apt-get update -q && apt-get install -y -q chromium; } || \
		echo "chromium not installed: the browser tests will skip"

# lerobot-doctor, an independent LeRobot v3.0 checker, in a virtual environment of its own
# (not Flywheel's dependencies): the export test reads `flywheel export`'s output with it, and
# skips, saying why, where it cannot be installed.
DOCTOR := .venv-tools/lerobot-doctor
# openpi's robot-side client (openpi-client, which needs numpy < 2), likewise in its own
# environment: the policy server's tests run a robot with it (tests/policy_server).
# typing_extensions: openpi-client imports it without declaring it.
OPENPI := .venv-tools/openpi-client
tools:
	@test -x $(DOCTOR)/bin/lerobot-doctor || \
		{ $(PYTHON) -m venv $(DOCTOR) && $(DOCTOR)/bin/pip install -q 'lerobot-doctor==0.2.0'; } || \
		{ rm -rf $(DOCTOR); echo "lerobot-doctor not installed: the export check will skip"; }
	@test -x $(OPENPI)/bin/python || \
		{ $(PYTHON) -m venv $(OPENPI) && $(OPENPI)/bin/pip install -q 'openpi-client==0.1.2' typing_extensions; } || \
		{ rm -rf $(OPENPI); echo "openpi-client not installed: the policy server's client test will skip"; }

# The lerobot package itself, to read an export with LeRobot's own reader (a slow test that
# skips without it). Not part of `make test`: it needs Python 3.12 and pulls about 5 GB.
LEROBOT_PYTHON ?= python3.12
lerobot-tools:
	test -x .venv-tools/lerobot/bin/python || $(LEROBOT_PYTHON) -m venv .venv-tools/lerobot
	.venv-tools/lerobot/bin/pip install -q 'lerobot[dataset]==0.6.1'

# Two test processes (pytest-xdist), whole files to each: the suite spends much of its time
# waiting on subprocesses (Ray, the API, Prefect's server), so two processes on 2 cores take
# about half the time of one. TEST_WORKERS=0 runs it in this process, for debugging.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: setup browser tools
	$(PYTEST)

test-fast: setup
	$(PYTEST) -m "not slow"

# The ingest, training and API load benchmarks (the load one needs the local PostgreSQL),
# and the flywheel benchmark's quick mode (< 10 min); `make bench-flywheel` is its full run
# (about an hour here). Results: bench/results/.
bench: setup
	$(PY) bench/ingest.py
	$(PY) bench/train.py
	$(PY) bench/load.py
	$(PY) bench/camera_ingest.py
	$(PY) bench/flywheel.py --quick

bench-flywheel: setup
	$(PY) bench/flywheel.py

# ruff, the layer contracts in pyproject.toml ([tool.importlinter]), and hadolint on the
# Dockerfiles (any finding at warning level or above fails).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/hadolint --failure-threshold warning $(wildcard infra/docker/*Dockerfile)

serve: setup
	$(VENV)/bin/flywheel serve

# Production mode on this machine: Prefect, MLflow and the API on the local PostgreSQL
# (FLYWHEEL_HOME defaults to .flywheel/prod); `make down` stops them by their process ids.
PROD_HOME ?= .flywheel/prod
up: setup
	FLYWHEEL_HOME=$(PROD_HOME) $(VENV)/bin/flywheel up

down: setup
	FLYWHEEL_HOME=$(PROD_HOME) $(VENV)/bin/flywheel down

clean:
	rm -rf $(VENV) .venv-tools .flywheel

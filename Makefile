# The two set-up commands of the README: `make quickstart` (main job) and `make test`.
.PHONY: install quickstart test lint

install:
	bash scripts/install.sh

quickstart: install
	.venv/bin/orchestrator train configs/quickstart.yaml --out results/quickstart

test: install
	bash scripts/test.sh

lint:
	.venv/bin/ruff check .

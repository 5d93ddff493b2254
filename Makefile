# The two set-up commands of the README: `make quickstart` (main job) and `make test`.
.PHONY: install lock data quickstart test lint

install:
	bash scripts/install.sh

# Re-resolve requirements.lock after a change to pyproject.toml's dependencies (pins that still fit
# are kept; `bash scripts/lock.sh --upgrade` moves them all to the newest allowed).
lock:
	bash scripts/lock.sh

# The CS224N files into ./data (or $ORCHESTRATOR_DATA_DIR), verified; present ones are kept.
data: install
	.venv/bin/orchestrator data fetch

# The data (fetched into ./data unless a checked directory is already there), a 6-trial sweep on
# CPU, then the ensemble of its 3 best trials (scored on the trials' dev subsets
# so it stays quick on 2 cores; drop `--dev sweep` to score on the full dev files).
quickstart: install
	.venv/bin/orchestrator data check >/dev/null 2>&1 || .venv/bin/orchestrator data fetch
	.venv/bin/orchestrator sweep search_spaces/quickstart.yaml
	.venv/bin/orchestrator ensemble --sweep quickstart --top 3 --dev sweep

test: install
	bash scripts/test.sh

lint:
	.venv/bin/ruff check .
	.venv/bin/mypy

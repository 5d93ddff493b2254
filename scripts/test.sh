#!/usr/bin/env bash
# Run the test suite: fast unit tests plus the integration and cluster tests (real Ray, Optuna, MLflow
# on tiny models). GPU tests are skipped without CUDA. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
export ORCHESTRATOR_DATA_DIR=${ORCHESTRATOR_DATA_DIR:-$(cd .. && pwd)/shared/data/cs224n}
export RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
.venv/bin/python -m pytest -m "not slow" "$@"
status=$?
# pytest exits 5 when the selection collected no test (e.g. `make test -- -k nomatch`): say so plainly
# and do not turn an empty selection into a failure.
if [ "$status" -eq 5 ]; then
  echo "pytest: no tests were collected for this selection" >&2
  status=0
fi
exit "$status"

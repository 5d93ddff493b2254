#!/usr/bin/env bash
# Run the test suite: fast unit tests plus the integration and cluster tests (real Ray, Optuna, MLflow
# on tiny models). GPU tests are skipped without CUDA. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
export ORCHESTRATOR_DATA_DIR=${ORCHESTRATOR_DATA_DIR:-$(cd .. && pwd)/shared/data/cs224n}
export RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
# The MLflow UI end-to-end test drives Debian's headless Chromium; install it where we can (as root
# with apt), otherwise that one test skips and says why.
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "chromium could not be installed; the MLflow UI browser test will skip" >&2
fi
.venv/bin/python -m pytest -m "not slow" "$@"
status=$?
# pytest exits 5 when the selection collected no test (e.g. `make test -- -k nomatch`): say so plainly
# and do not turn an empty selection into a failure.
if [ "$status" -eq 5 ]; then
  echo "pytest: no tests were collected for this selection" >&2
  status=0
fi
exit "$status"

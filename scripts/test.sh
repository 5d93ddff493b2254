#!/usr/bin/env bash
# What CI runs: ruff and mypy (both configured in pyproject.toml), then the test suite: fast unit
# tests plus the integration and cluster tests (real Ray, Optuna, MLflow on tiny models). GPU tests
# are skipped without CUDA. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
# The data the tests read: $ORCHESTRATOR_DATA_DIR (CI sets it), else ./data (`orchestrator data fetch`).
export ORCHESTRATOR_DATA_DIR=${ORCHESTRATOR_DATA_DIR:-$PWD/data}
export RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
# Two tests need a Debian package: the MLflow UI end-to-end test drives headless Chromium, and the
# tracking server's PostgreSQL tests start a throwaway PostgreSQL server of their own. Install what
# is missing where we can (as root with apt, one `apt-get update` for both), otherwise those tests
# skip and say why.
apt_updated=""
install_for_tests() {  # PACKAGE WHAT_SKIPS_WITHOUT_IT
  command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] || return 0
  { [ -n "$apt_updated" ] || apt-get update -qq >/dev/null 2>&1; } && apt_updated=1 \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null 2>&1 \
    || echo "$1 could not be installed; $2 will skip" >&2
}
command -v chromium >/dev/null || install_for_tests chromium "the MLflow UI browser test"
# Debian keeps initdb and postgres off PATH, in /usr/lib/postgresql/VERSION/bin.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null \
  || install_for_tests postgresql "the PostgreSQL tracking-server tests"
# A lint or type error fails the run, but pytest still runs so that every problem shows at once.
failed_checks=""
.venv/bin/ruff check . || failed_checks+=" ruff"
.venv/bin/mypy || failed_checks+=" mypy"
.venv/bin/python -m pytest -m "not slow" "$@"
status=$?
# pytest exits 5 when the selection collected no test (e.g. `make test -- -k nomatch`): say so plainly
# and do not turn an empty selection into a failure.
if [ "$status" -eq 5 ]; then
  echo "pytest: no tests were collected for this selection" >&2
  status=0
fi
if [ -n "$failed_checks" ]; then
  echo "failed:$failed_checks (output above)" >&2
  [ "$status" -ne 0 ] || status=1
fi
exit "$status"

#!/usr/bin/env bash
# One command for everything a fresh Debian/Ubuntu machine needs, then the job:
#   bash scripts/setup.sh demo   # set up, then run the demo on a throw-away local Orthanc
#   bash scripts/setup.sh test   # set up, then run the test suite against real Orthanc servers
# Extra arguments go to the demo or to pytest.
# The tests run on this machine's Orthanc (Debian bookworm: 1.10.1) and on Debian sid's current
# Orthanc (1.13), then the version-sensitive tests on trixie's 1.12.7 (":quick"). The roots of
# sid and trixie are installed once, before the first run, into $ORTHANC_PANDAS_CACHE/roots
# (default ~/.cache/orthanc-pandas/roots; root needed). ORTHANC_SERVERS="system", "sid" ...
# runs only those; TEST_WORKERS=N sets the number of pytest-xdist workers (default 2, 0: none).
set -euo pipefail
cd "$(dirname "$0")/.."
job="${1:-demo}"; shift || true
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"

apt_install() {  # install Debian packages when missing and possible, else say how
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo"; else
      echo "Missing Debian packages: ${missing[*]}" >&2
      echo "Install them with: sudo apt-get install -y ${missing[*]}" >&2
      return 1
    fi
  fi
  if ! command -v apt-get >/dev/null; then
    echo "No apt-get here. Install Orthanc ($*) with your package manager, or set ORTHANC_BINARY." >&2
    return 1
  fi
  echo "Installing ${missing[*]} from Debian's packages..." >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  # The packages start a system-wide Orthanc/PostgreSQL service where they can; we run our
  # own servers on free ports and need neither.
}

if [ -z "${ORTHANC_BINARY:-}" ]; then
  pkgs=(orthanc orthanc-dicomweb)
  if [ "$job" = test ]; then
    pkgs+=(orthanc-postgresql postgresql debootstrap dcm2niix)
    # headless Chromium opens the rendered notebooks (tests/test_notebooks.py): Debian's package;
    # elsewhere (Ubuntu ships Chromium as a snap) install one and set CHROMIUM to its binary
    grep -qs '^ID=debian' /etc/os-release && pkgs+=(chromium)
  fi
  apt_install "${pkgs[@]}"
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "Creating the virtualenv $VENV..." >&2
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
extras=test
[ "$job" = demo ] && extras=pixels,plot
"$VENV/bin/python" -m pip install -q -e ".[$extras]"

run_tests() {  # the suite once per Orthanc server; fails if any run fails
  local rc=0 server suite root
  # pytest-xdist workers (0: none); whole files go to one worker, so a module's shared server
  # is started once. Each worker has its own session servers.
  local workers=(-n "${TEST_WORKERS:-2}" --dist loadfile)
  local servers=${ORTHANC_SERVERS:-system sid trixie:quick}
  local quick=(tests/test_capabilities.py tests/test_changes.py tests/test_read.py
               tests/test_refresh.py tests/test_labels.py tests/test_fetch_tags.py)
  # Tests that start no server give the same answer on every run: after the first whole run
  # they are left out of the next ones (about a minute of fuzzing and generated files).
  local serverless=(--ignore=tests/test_doctests.py --ignore=tests/test_matching.py
                    --ignore=tests/test_synthetic.py --ignore=tests/test_tags.py
                    --ignore=tests/test_geometry.py --ignore=tests/test_plot.py
                    --ignore=tests/test_architecture.py
                    --deselect=tests/test_schema.py::test_fuzz_no_crash_no_silent_loss
                    --deselect=tests/test_schema.py::test_fuzz_every_level_against_python_parsing)
  local whole_runs=0
  # Every root first: the run on this machine's Orthanc compares it with sid's (tests that
  # need both versions), so sid's root must exist before the first pytest run too.
  declare -A roots=()
  local needed=(sid)
  for server in $servers; do
    suite=${server%:quick}
    [ "$suite" != system ] && needed+=("$suite")
  done
  for suite in "${needed[@]}"; do
    [ -n "${roots[$suite]:-}" ] && continue
    roots[$suite]=$("$VENV/bin/orthanc-pandas" install-orthanc --suite "$suite") || roots[$suite]=""
  done
  for server in $servers; do
    local args=("${workers[@]}" "$@")
    suite=${server%:quick}
    if [ "$server" != "$suite" ]; then
      args=("${workers[@]}" "${quick[@]}" "$@")
    else
      [ $whole_runs -gt 0 ] && args=("${workers[@]}" "${serverless[@]}" "$@")
      whole_runs=$((whole_runs + 1))
    fi
    if [ "$suite" = system ]; then
      echo "== tests on this machine's Orthanc ==" >&2
      env -u ORTHANC_ROOT "$VENV/bin/python" -m pytest "${args[@]}" || rc=$?
    else
      root=${roots[$suite]:-}
      if [ -z "$root" ]; then
        echo "== no root for Debian $suite's Orthanc: its run fails ==" >&2
        rc=1; continue
      fi
      echo "== tests on Debian $suite's Orthanc ($root)${server#"$suite"} ==" >&2
      ORTHANC_ROOT="$root" "$VENV/bin/python" -m pytest "${args[@]}" || rc=$?
    fi
  done
  return $rc
}

case "$job" in
  demo) exec "$VENV/bin/orthanc-pandas" demo "$@" ;;
  test) run_tests "$@" ;;
  *) echo "usage: bash scripts/setup.sh [demo|test] [args...]" >&2; exit 2 ;;
esac

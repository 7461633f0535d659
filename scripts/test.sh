#!/usr/bin/env bash
# Install everything the test suite needs into .venv and run lint, types and tests.
# The README's test command; .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# apt and dpkg lock these files (fcntl locks) while they run: unattended-upgrades or a
# parallel job may hold them for minutes. Wait for them instead of failing.
APT_LOCKS=(${APT_LOCKS:-/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/cache/apt/archives/lock})
APT_LOCK_WAIT=${APT_LOCK_WAIT:-600} # seconds

lock_holder() { # the first lock another process holds, else nothing
  python3 - "${APT_LOCKS[@]}" <<'PY'
import fcntl, os, sys
for path in sys.argv[1:]:
    try:
        fd = os.open(path, os.O_WRONLY)  # never creates a lock file
    except OSError:
        continue
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on close
    except OSError:
        print(path)
        break
    finally:
        os.close(fd)
PY
}

wait_for_apt_locks() {
  local deadline=$((SECONDS + APT_LOCK_WAIT)) held said=""
  while held=$(lock_holder) && [ -n "$held" ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "Error: $held is still held by another apt/dpkg after ${APT_LOCK_WAIT}s; try again later" >&2
      return 1
    fi
    if [ -z "$said" ]; then
      echo "Waiting for another apt/dpkg to release $held (up to ${APT_LOCK_WAIT}s)..."
      said=1
    fi
    sleep 2
  done
}

apt_get() { # apt-get that waits for the locks, before and (apt's own timeout) during
  wait_for_apt_locks
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="$APT_LOCK_WAIT" "$@"
}

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "Installing Debian packages: ${need_apt[*]}"
    apt_get update -qq
    apt_get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "Missing ${need_apt[*]}: install them (sudo apt-get install ${need_apt[*]}); tests that need them are skipped."
  fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
# The recorder again with its C fast paths turned off: what runs where no compiler was.
if [ $# -eq 0 ]; then
  REDIRECT_AUDITOR_PURE_PYTHON=1 .venv/bin/python -m pytest -q \
    tests/test_recorder_*.py tests/test_writer_batches.py tests/test_journal.py \
    tests/test_privacy.py tests/test_hostile_input.py tests/test_native.py tests/test_linking.py
fi

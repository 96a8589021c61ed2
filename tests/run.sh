#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine (as root), then run them.
# Usage: bash tests/run.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# podman with runc and slirp4netns: tests/test_container.py (a private podman, user-mode ports).
apt_packages=(chromium chromium-driver openssh-server openssh-client iproute2
  podman runc slirp4netns)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "== apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

venv=${VENV:-.venv}
if [ ! -x "$venv/bin/python" ]; then
  echo "== creating $venv"
  python3 -m venv "$venv"
fi
echo "== pip install -e .[test]"
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
# The editable install also builds the JupyterLab extension (labextension/, with jlpm and the
# npm registry) into jupyter_colab_remote/labextension and installs it into the venv.
"$venv/bin/python" -m pip install -q -e '.[test]'
export PATH="$PWD/$venv/bin:$PATH"
extensions=$(jupyter labextension list 2>&1 || true)
if ! grep -q "jupyter-colab-remote.*enabled" <<<"$extensions"; then
  echo "$extensions" >&2
  echo "the JupyterLab extension is not installed (see labextension/ and pyproject.toml)" >&2
  exit 1
fi

# tests/test_first_hour.py: the package's dependencies (with the lab extra) as wheels, the
# "package index" of a simulated server that has none (~55 MB, ~100 wheels, ~15 s). For the
# Python of that server, Debian's /usr/bin/python3 (pip picks the releases that support its
# exact version; they work for this venv's Python too). Filled once per server Python version.
server_python=$(/usr/bin/python3 -c 'import platform; print(platform.python_version())')
if [ "$(cat .wheelhouse/.complete 2>/dev/null)" != "$server_python" ]; then
  echo "== .wheelhouse: pip download of jupyter-colab-remote[lab]'s dependencies for Python $server_python"
  rm -rf .wheelhouse
  reqs=$("$venv/bin/python" -c \
    'from jupyter_colab_remote.companion.wheels import requirements; print(*requirements("lab"))')
  # shellcheck disable=SC2086  # one word per requirement
  "$venv/bin/python" -m pip download -q --only-binary=:all: --python-version "$server_python" \
    --dest .wheelhouse $reqs
  echo "$server_python" >.wheelhouse/.complete
fi

# Enterprise Gateway 3.3.0 pins jupyter_server<2 and jupyter_client<7: it gets its own venv
# (tests/test_enterprise_gateway.py). It does not depend on ipykernel, which its remote
# kernels need (ipykernel 7 wants jupyter_client>=8).
eg_venv=${EG_VENV:-.venv-eg}
eg_check='import Cryptodome, ipykernel, enterprise_gateway as e; assert e.__version__ == "3.3.0"'
if ! "$eg_venv/bin/python" -c "$eg_check" 2>/dev/null; then
  echo "== $eg_venv: pip install jupyter_enterprise_gateway==3.3.0"
  [ -x "$eg_venv/bin/python" ] || python3 -m venv "$eg_venv"
  "$eg_venv/bin/python" -m pip install -q 'jupyter_enterprise_gateway==3.3.0' 'ipykernel>=6,<7'
fi
EG_VENV=$(realpath "$eg_venv")
export EG_VENV

echo "== ruff"
ruff check .
ruff format --check .
# The extension's eslint + prettier (labextension/package.json), with the node_modules
# the editable install above made.
echo "== jlpm run lint:check (labextension)"
(cd labextension && jlpm run lint:check)

# The `server` tests again at the lowest versions pyproject.toml allows, so the floors stay
# true: uv's lowest-direct resolution pins the package's own dependencies at their floors
# (theirs at the newest that fit), and the test tools come at their usual versions. With the
# full suite only (or RUN_LOWEST=1); the venv is kept, so a rerun only re-resolves.
lowest_rc=0
if [ "${RUN_LOWEST:-$(($# == 0))}" = 1 ]; then
  lowest=${LOWEST_VENV:-.venv-lowest}
  lowest_start=$SECONDS
  echo "== $lowest: pytest -m server at the dependency floors (uv lowest-direct)"
  uv=$venv/bin/uv
  [ -x "$lowest/bin/python" ] || "$uv" venv -q --python "$venv/bin/python3" "$lowest"
  "$uv" pip compile -q --python "$lowest/bin/python" --resolution lowest-direct \
    pyproject.toml -o "$lowest/lowest-direct.txt"
  # The test extra's pytest tools (pytest, pytest-jupyter, pytest-timeout), as declared.
  mapfile -t test_tools < <(python -c 'import tomllib
extra = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["test"]
print("\n".join(r for r in extra if r.startswith("pytest")))')
  "$uv" pip install -q --python "$lowest/bin/python" -c "$lowest/lowest-direct.txt" \
    -r "$lowest/lowest-direct.txt" -e . "${test_tools[@]}"
  "$lowest/bin/python" -c 'import tomllib
from importlib.metadata import version
from packaging.requirements import Requirement
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
reqs = [Requirement(d) for d in deps]
names = [r.name for r in reqs if r.marker is None or r.marker.evaluate()]
print("floors:", " ".join(f"{n}=={version(n)}" for n in names))'
  # -W ignore: the old versions warn about their own deprecations.
  set +e
  "$lowest/bin/python" -m pytest -p no:cacheprovider -q -W ignore -m server tests
  lowest_rc=$?
  set -e
  if [ "$lowest_rc" -eq 5 ]; then
    echo "pytest collected no server tests at the lowest versions" >&2
    lowest_rc=1
  fi
  echo "== $lowest: $((SECONDS - lowest_start)) s"
fi

echo "== pytest"
set +e
python -m pytest -p no:cacheprovider -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests" >&2
  exit 1
fi
if [ "$rc" -eq 0 ] && [ "$lowest_rc" -ne 0 ]; then
  echo "the server tests failed at the lowest dependency versions (see above)" >&2
  exit "$lowest_rc"
fi
exit "$rc"

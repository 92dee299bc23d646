#!/usr/bin/env bash
# CI step for the Scipion plugin (deploy/scipion-em-pairextract): Scipion pins numpy 1.26.1,
# scipy<=1.10 and mrcfile<=1.4.3, so the plugin is installed and tested in a Scipion
# environment of its own (a throw-away venv), while pairextract runs from the environment
# .ci/run installed it in, found by the plugin's PAIREXTRACT_HOME as a user configures it.
# Any failure exits non-zero, which fails .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
plugin=deploy/scipion-em-pairextract

work=$(mktemp -d "${TMPDIR:-/tmp}/pairextract-scipion-ci.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$SECONDS

# pairextract's environment: where `pairextract` was installed by .ci/run.
prefix=$(python3 -c 'import sys; print(sys.prefix)')
if [ -x "$prefix/bin/pairextract" ]; then
  export PAIREXTRACT_HOME="$prefix"
else
  echo "ci: no pairextract in $prefix/bin (run .ci/run's install first)" >&2
  exit 1
fi
python3 -m ruff check "$plugin"

# Scipion's environment. Versions pinned: the plugin is tested against these.
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q \
  "scipion-pyworkflow==3.11.7" "scipion-em==3.11.1" \
  "scipion-em-xmipp==29.0.1" "scipion-app==3.8.3" "pytest>=7" \
  -e "$plugin"
installed=$SECONDS
echo "ci: Scipion environment installed in $((installed - start)) s"

# conftest.py makes a throw-away SCIPION_HOME (projects, hosts.conf) and removes it after.
(cd "$plugin" && "$work/venv/bin/python" -m pytest -q -p no:cacheprovider -p no:warnings)
echo "ci: Scipion plugin tests took $((SECONDS - installed)) s"

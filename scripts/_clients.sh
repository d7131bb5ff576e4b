# Sourced by scripts/test: make .venv-clients with the third-party clients the tests drive
# (tests/clients/requirements.txt), reinstalling only when that file changed.
set -euo pipefail
CLIENTS="$ROOT/.venv-clients"
REQS="$ROOT/tests/clients/requirements.txt"
if [ ! -x "$CLIENTS/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$CLIENTS"
fi
CSTAMP="$CLIENTS/.installed-$(sha256sum "$REQS" | cut -c1-16)"
if [ ! -f "$CSTAMP" ]; then
  echo "installing the third-party test clients into $CLIENTS ..." >&2
  "$CLIENTS/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS"
  touch "$CSTAMP"
fi

#!/usr/bin/env bash
# Runs a command with the T-SQL engine (Babelfish for PostgreSQL, from shared/babelfish) started in its own folder
# and port, MSSQL_URL set to it, and stops the engine after, whatever the command did.
# Where the engine's scripts are missing, it says plainly that the SQL Server tests were skipped and why, and
# exits 0 (the rest of `make test` still ran; nothing here pretends to have passed).
# Usage: scripts/with-engine.sh BABELFISH_FOLDER ENGINE_DIR PORT COMMAND...
set -euo pipefail
bf="$1"; dir="$2"; port="$3"; shift 3
if [ ! -x "$bf/start" ]; then
  echo "SKIPPED: the SQL Server adapter's tests (store contract, migrations, races and crashes on a T-SQL engine):"
  echo "  $bf/start was not found. Put shared/babelfish beside this repository (README: SQL Server tests),"
  echo "  or run 'make test-mssql' with MSSQL_URL set to a scratch SQL Server."
  exit 0
fi
if ! command -v xz >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends xz-utils >/dev/null
  else
    echo "the T-SQL engine needs xz to unpack: apt-get install xz-utils"; exit 1
  fi
fi
mkdir -p "$dir"
cleanup() { "$bf/stop" --dir "$dir" >/dev/null 2>&1 || true; }
trap cleanup EXIT INT TERM
line="$("$bf/start" --dir "$dir" --port "$port")" || { echo "the T-SQL engine did not start: $line"; exit 1; }
url="$(printf '%s\n' "$line" | sed -n 's/^MSSQL_URL=//p')"
[ -n "$url" ] || { echo "the T-SQL engine printed no MSSQL_URL: $line"; exit 1; }
export MSSQL_URL="$url"
echo "T-SQL engine (Babelfish) on 127.0.0.1:$port, folder $dir"
"$@"

#!/usr/bin/env bash
# Invokes one Lambda function locally with an event file from events/, the way `cargo lambda invoke` does,
# against `cargo lambda watch` started here and stopped afterwards.
# Usage: scripts/invoke.sh VENV_DIR FUNCTION EVENT_FILE
# The functions use the SQLite database that `make run` leaves in .run/demo.db (run it first).
set -euo pipefail
venv="$1" function="$2" event="$3"
export PATH="$PWD/$venv/bin:$PATH"
[ -f .run/demo.db ] || { echo "no .run/demo.db: run 'make run' first"; exit 1; }
port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log="$(mktemp -t cargo-lambda-watch.XXXXXX.log)"
DATABASE_URL="sqlite://$PWD/.run/demo.db" OUTBOX_DIR="$PWD/.run/outbox" RUST_LOG="${RUST_LOG:-info}" \
  cargo lambda watch --invoke-port "$port" -p functions >"$log" 2>&1 &
watch_pid=$!
cleanup() { kill "$watch_pid" 2>/dev/null || true; wait "$watch_pid" 2>/dev/null || true; pkill -f "target/debug/$function" 2>/dev/null || true; rm -f "$log"; }
trap cleanup EXIT INT TERM
for _ in $(seq 1 600); do
  if "$venv/bin/python" -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then break; fi
  if ! kill -0 "$watch_pid" 2>/dev/null; then cat "$log"; exit 1; fi
  sleep 0.5
done
cargo lambda invoke "$function" --invoke-port "$port" --data-file "$event"
echo

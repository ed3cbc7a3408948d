#!/usr/bin/env bash
# Invokes one Lambda function locally, the way `cargo lambda invoke` does, against `cargo lambda watch`.
#
# Usage: scripts/invoke.sh VENV_DIR FUNCTION EVENT_FILE
#        scripts/invoke.sh VENV_DIR device-bulk-change --new-bulk-change
#
# Each run starts its own local stack in .run/invoke/ (`bulkchange serve --no-worker` with the carrier simulators
# and events/seed.json, so the functions have a seeded database and carriers to call) and `cargo lambda watch`
# on the same database. With --new-bulk-change it submits events/api/01-submit-bulk-change.json through the API
# function, hands the new bulk change to the worker function as an SQS event, and reads its status back through
# the API function: the bulk change's rows are processed by the Lambda handler, end to end.
#
# The function's log is kept in .run/invoke/cargo-lambda.log and shown after the invocation. Only the processes
# this script started (and their children, found by PID) are stopped on exit.
set -euo pipefail
venv="$1" function="$2" event="$3"
py="$venv/bin/python"
export PATH="$PWD/$venv/bin:$PATH"
dir="$PWD/.run/invoke"
rm -rf "$dir" && mkdir -p "$dir"
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { # PORT PID LOG
  for _ in $(seq 1 1200); do
    if "$py" -c "import socket; socket.create_connection(('127.0.0.1', $1), 1)" 2>/dev/null; then return 0; fi
    if ! kill -0 "$2" 2>/dev/null; then cat "$3"; echo "process $2 stopped before listening on $1"; return 1; fi
    sleep 0.5
  done
  echo "nothing listens on $1 after 10 minutes"; return 1
}
# Every descendant of a PID, deepest first, read from the process table at the time of the call.
descendants() { local child; for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do descendants "$child"; echo "$child"; done; }
started=()
stop_started() {
  local pid victims=()
  for pid in "${started[@]}"; do victims+=($(descendants "$pid") "$pid"); done
  [ ${#victims[@]} -eq 0 ] || kill "${victims[@]}" 2>/dev/null || true
  for pid in "${started[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_started EXIT INT TERM
secret="local-invoke-secret-at-least-32-bytes-long"
# A region, so the AWS SDK does not ask the instance metadata service for one.
export AWS_REGION="${AWS_REGION:-us-east-1}" DATABASE_URL="sqlite://$dir/invoke.db" OUTBOX_DIR="$dir/outbox" RUST_LOG="${RUST_LOG:-info}"

cargo build -q -p cli --bin bulkchange
api_port="$(free_port)"
target/debug/bulkchange serve --listen "127.0.0.1:$api_port" --seed events/seed.json --simulators --no-worker \
  --jwt-secret "$secret" >"$dir/serve.log" 2>&1 &
started+=($!)
wait_port "$api_port" "$!" "$dir/serve.log"

port="$(free_port)"
cargo lambda watch --invoke-port "$port" -p functions >"$dir/cargo-lambda.log" 2>&1 &
started+=($!)
wait_port "$port" "$!" "$dir/cargo-lambda.log"
show_log() {
  echo "--- $function log ($dir/cargo-lambda.log, build lines left out) ---"
  grep -v -E '^\s*(Compiling|Checking|Blocking|Finished|Running|Building|Downloaded|Downloading|Locking|Updating) ' \
    "$dir/cargo-lambda.log" || true
}
invoke() { # FUNCTION EVENT_FILE: prints the function's answer
  cargo lambda invoke "$1" --invoke-port "$port" --data-file "$2"
}

if [ "$event" != "--new-bulk-change" ]; then
  invoke "$function" "$event"
  echo
  show_log
  exit 0
fi

echo "--- bulk-change-api: submit events/api/01-submit-bulk-change.json ---"
invoke bulk-change-api events/api/01-submit-bulk-change.json | tee "$dir/submit.json"
echo
"$py" scripts/lambda_events.py sqs-for "$dir/submit.json" >"$dir/sqs-event.json"
echo "--- device-bulk-change: $(cat "$dir/sqs-event.json" | "$py" -c 'import json,sys; print(", ".join(r["body"] for r in json.load(sys.stdin)["Records"]))') ---"
invoke device-bulk-change "$dir/sqs-event.json"
echo
for id in $("$py" scripts/lambda_events.py ids "$dir/submit.json"); do
  "$py" scripts/lambda_events.py status-for "$id" >"$dir/status-$id.json"
  echo "--- bulk-change-api: GET /M2M/BulkChangeStatus/$id ---"
  invoke bulk-change-api "$dir/status-$id.json" | "$py" scripts/lambda_events.py summary
done
show_log

#!/usr/bin/env python3
"""Measures a Lambda bootstrap's start-up: process start to its first request on the Lambda runtime API.

A minimal runtime API on 127.0.0.1 answers /runtime/invocation/next by recording the time and then ending the
run (the process is stopped once its first poll arrives). Usage: lambda-startup.py BOOTSTRAP [RUNS]
Environment for the function (DATABASE_URL, ...) is passed through. Prints `name=value` lines.
"""
import http.server
import os
import statistics
import subprocess
import sys
import threading
import time

first_poll = threading.Event()


class RuntimeApi(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.endswith("/runtime/invocation/next"):
            first_poll.set()
            time.sleep(5)  # hold the poll open; the process is stopped meanwhile
        elif self.path.endswith("/extension/event/next"):
            time.sleep(5)  # the graceful-shutdown extension waits for events
        self.send_response(404)
        self.end_headers()

    def do_POST(self):
        if self.path.endswith("/extension/register"):
            # lambda_runtime's graceful-shutdown helper registers a no-op extension first.
            body = b'{"functionName":"local","functionVersion":"$LATEST","handler":"bootstrap"}'
            self.send_response(200)
            self.send_header("Lambda-Extension-Identifier", "local-extension-id")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args):
        pass


def measure(bootstrap: str) -> float:
    first_poll.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(os.environ)
    env.update({
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{server.server_address[1]}",
        "AWS_LAMBDA_FUNCTION_NAME": os.path.basename(bootstrap),
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/local",
        "AWS_LAMBDA_LOG_STREAM_NAME": "local",
        "AWS_REGION": env.get("AWS_REGION", "us-east-1"),
        "AWS_ACCESS_KEY_ID": env.get("AWS_ACCESS_KEY_ID", "startup-test"),
        "AWS_SECRET_ACCESS_KEY": env.get("AWS_SECRET_ACCESS_KEY", "startup-test"),
        "AWS_EC2_METADATA_DISABLED": "true",
    })
    start = time.perf_counter()
    proc = subprocess.Popen([bootstrap], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ok = first_poll.wait(timeout=30)
    elapsed = time.perf_counter() - start
    proc.kill()
    _, err = proc.communicate()
    server.shutdown()
    if not ok:
        raise SystemExit(f"{bootstrap} never polled the runtime API:\n{err.decode(errors='replace')[-2000:]}")
    return elapsed * 1000.0


def main():
    bootstrap = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    samples = [measure(bootstrap) for _ in range(runs)]
    name = os.path.basename(bootstrap)
    print(f"{name}_startup_ms_median={statistics.median(samples):.1f}")
    print(f"{name}_startup_ms_min={min(samples):.1f}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Start a server and time its first successful request (scenario S6).

Starts COMMAND, then connects to 127.0.0.1:PORT every millisecond and sends
`GET /` until a response has status 200 and the expected body. Prints one
JSON line:

    {"ready_ms": ..., "first_request_ms": ..., "attempts": ...}

ready_ms is the time from starting COMMAND to the end of the first good
response. first_request_ms is the latency of that request alone, from
sending it on a connected socket to the end of the response. COMMAND runs
in a new session, so its process group also contains the children it forks.
The probe then sends --stop-signal to that group, and SIGKILL to what is
left of it after 10 s. Exits with status 1 and prints the problem if the
server exits or no good response arrives within --timeout seconds.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time

STOP_WAIT_SECONDS = 10
RESPONSE_TIMEOUT_SECONDS = 5
POLL_INTERVAL_SECONDS = 0.001


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="port the server listens on")
    parser.add_argument("--host", default="bench.test", help="Host header of the request")
    parser.add_argument("--expect-body", required=True, help="body of a good response")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for a good response")
    parser.add_argument("--pid-file", help="file to write the server's pid to, for the caller's cleanup")
    parser.add_argument("--stop-signal", default="TERM", help="signal name that stops the server, for example INT")
    parser.add_argument("--log", default=os.devnull, help="file that receives the server's output")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the server's command line")
    args = parser.parse_args()
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        parser.error("missing the server command after --")
    return args


def fetch(port, host):
    """Send one GET request and return (status, body, latency in seconds).

    Raises OSError if the connection fails or the server closes it early.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=RESPONSE_TIMEOUT_SECONDS) as sock:
        request = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        sent = time.perf_counter()
        sock.sendall(request)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        latency = time.perf_counter() - sent
    response = b"".join(chunks)
    head, separator, body = response.partition(b"\r\n\r\n")
    if not separator:
        raise OSError(f"incomplete response: {response[:200]!r}")
    lines = head.split(b"\r\n")
    status_line = lines[0].split()
    status = int(status_line[1]) if len(status_line) > 1 else 0
    if any(line.lower().replace(b" ", b"") == b"transfer-encoding:chunked" for line in lines[1:]):
        body = decode_chunked(body)
    return status, body, latency


def decode_chunked(data):
    """Return the body of a chunked message without its framing."""
    body = []
    while True:
        size_line, separator, data = data.partition(b"\r\n")
        if not separator:
            raise OSError("incomplete chunked body")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return b"".join(body)
        body.append(data[:size])
        data = data[size + 2:]


def stop(process, signal_name):
    """Stop the server's process group with SIGNAL_NAME, then SIGKILL."""
    try:
        os.killpg(process.pid, getattr(signal, "SIG" + signal_name))
        process.wait(STOP_WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        pass
    # The group outlives its leader when a child is still running, as an
    # nginx worker may be.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(STOP_WAIT_SECONDS)


def main():
    args = parse_args()
    expected_body = args.expect_body.encode()
    with open(args.log, "ab") as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            args.command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
    if args.pid_file:
        with open(args.pid_file, "w") as file:
            file.write(str(process.pid))

    attempts = 0
    last_problem = "no attempt"
    result = None
    try:
        while time.perf_counter() - started < args.timeout:
            if process.poll() is not None:
                last_problem = f"the server exited with status {process.returncode}; see {args.log}"
                break
            attempts += 1
            try:
                status, body, latency = fetch(args.port, args.host)
            except OSError as error:
                last_problem = f"request failed: {error}"
                time.sleep(POLL_INTERVAL_SECONDS)
                continue
            if status == 200 and body == expected_body:
                ready = time.perf_counter() - started
                result = {
                    "ready_ms": round(ready * 1000, 3),
                    "first_request_ms": round(latency * 1000, 3),
                    "attempts": attempts,
                }
                break
            last_problem = f"status {status}, body {body[:200]!r}"
            time.sleep(POLL_INTERVAL_SECONDS)
        else:
            last_problem = f"no good response within {args.timeout} s; last: {last_problem}"
    finally:
        stop(process, args.stop_signal)

    if result is None:
        print(last_problem)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

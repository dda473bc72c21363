#!/usr/bin/env python3
"""Open idle HTTP keep-alive connections to a server and hold them.

Opens --count connections to 127.0.0.1:PORT, sends one `GET /` on each and
reads its response, so that the server keeps every connection open as an
idle keep-alive connection. Then writes a JSON summary to --ready-file:

    {"open": ..., "failed": ..., "first_error": ...}

and keeps the connections open until --hold-seconds pass or the process
receives SIGTERM or SIGINT. Connections are opened --batch at a time so the
server's listen backlog does not overflow.
"""

import argparse
import asyncio
import json
import os
import resource
import signal
import sys

RESPONSE_TIMEOUT_SECONDS = 10


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="port of the server")
    parser.add_argument("--count", type=int, default=10000, help="connections to open")
    parser.add_argument("--batch", type=int, default=200, help="connections opened at the same time")
    parser.add_argument("--host", default="bench.test", help="Host header of the request")
    parser.add_argument("--ready-file", required=True, help="file that receives the JSON summary")
    parser.add_argument("--hold-seconds", type=float, default=60.0, help="seconds to hold the connections")
    return parser.parse_args()


def raise_open_file_limit(count):
    """Raise the soft open-file limit to the hard one, and exit if that is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft < count + 100:
        sys.exit(f"the open-file limit is {soft}; {count} connections need at least {count + 100}")


async def read_response(reader):
    """Read one response, with a Content-Length or chunked, and return its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "transfer-encoding" and value.strip().lower() == "chunked":
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def open_connection(port, host):
    """Open one connection, complete one request on it and return the streams."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        status = await asyncio.wait_for(read_response(reader), RESPONSE_TIMEOUT_SECONDS)
        if status != 200:
            raise OSError(f"status {status}")
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def main():
    args = parse_args()
    raise_open_file_limit(args.count)

    connections = []
    failed = 0
    first_error = None
    for start in range(0, args.count, args.batch):
        size = min(args.batch, args.count - start)
        results = await asyncio.gather(
            *(open_connection(args.port, args.host) for _ in range(size)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                failed += 1
                first_error = first_error or repr(result)
            else:
                connections.append(result)

    summary = {"open": len(connections), "failed": failed, "first_error": first_error}
    temporary = args.ready_file + ".tmp"
    with open(temporary, "w") as file:
        json.dump(summary, file)
    os.replace(temporary, args.ready_file)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), args.hold_seconds)
    except asyncio.TimeoutError:
        pass
    for _, writer in connections:
        writer.close()


if __name__ == "__main__":
    asyncio.run(main())

-- wrk script for bench/run.sh. It prints the run's summary as one JSON line
-- that starts with "BENCH_JSON ", with latencies in microseconds.
--
-- With BENCH_HOSTS=N (N > 0) in the environment, requests go round-robin to
-- the hosts h1.bench.test .. hN.bench.test. The requests are built once in
-- init, so that wrk spends little time in Lua per request.

local host_count = tonumber(os.getenv("BENCH_HOSTS") or "0") or 0

if host_count > 0 then
    local requests = {}
    local next_index = 0

    function init(args)
        for i = 1, host_count do
            requests[i] = wrk.format("GET", "/", {Host = "h" .. i .. ".bench.test"})
        end
    end

    function request()
        next_index = next_index % host_count + 1
        return requests[next_index]
    end
end

function done(summary, latency, requests)
    local errors = summary.errors
    io.write(string.format(
        'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, '
            .. '"p50_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, '
            .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
            .. '"hosts": %d}\n',
        summary.requests, summary.duration, summary.bytes,
        latency:percentile(50), latency:percentile(99), latency.max, latency.mean,
        errors.connect, errors.read, errors.write, errors.status, errors.timeout,
        host_count))
end

-- Counts visits per path in the key-value store and returns the count.
-- The route must declare the namespace: `kv: [visits]`.
add_event_listener("fetch", function(request)
    local visits = kv.namespace("visits")
    local count = tonumber(visits:get(request.path) or "0") + 1
    visits:put(request.path, tostring(count), {metadata = {last_client = request.client_ip}})
    return {
        body = json.stringify({path = request.path, visits = count}),
        headers = {["Content-Type"] = "application/json"},
    }
end)

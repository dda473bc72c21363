-- Returns a JSON response to every request, without an origin.
add_event_listener("fetch", function(request)
    return {
        body = json.stringify({
            hello = "world",
            route = request.route,
            method = request.method,
            path = request.path,
        }),
        headers = {["Content-Type"] = "application/json"},
    }
end)

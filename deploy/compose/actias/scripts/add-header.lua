-- Adds a request header and returns nothing, so the request goes on to the
-- route's origin with the header.
add_event_listener("fetch", function(request)
    request.headers["X-Served-By"] = "actias"
end)

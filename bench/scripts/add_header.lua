-- S4: add a request header and return nothing, so that Actias forwards the
-- request to the route's origin.
add_event_listener("fetch", function(request)
    request.headers["x-bench"] = "1"
end)

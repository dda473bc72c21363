-- S0: the smallest script response, for comparison with nginx `return 200`.
add_event_listener("fetch", function(request)
    return {body = "ok"}
end)

-- Logs, once an hour, how many paths the visits route has counted.
add_event_listener("scheduled", function(event)
    local visits = kv.namespace("visits")
    local paths, cursor = 0, nil
    repeat
        local page = visits:list({cursor = cursor, limit = 1000})
        paths += #page.keys
        cursor = page.cursor
    until page.list_complete
    log.info("visits has counted " .. paths .. " paths (run for " .. event.cron .. ")")
end)

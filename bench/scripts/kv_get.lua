-- S2: read one key from the store and return it. run.sh stores the key
-- `greeting` with the value {"hello":"world"} before the server starts.
add_event_listener("fetch", function(request)
    return {
        body = kv.namespace("bench"):get("greeting"),
        headers = {["Content-Type"] = "application/json"}
    }
end)

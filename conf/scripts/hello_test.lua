-- Tests for hello.lua; run with `actias test`.
local handler = test.load("hello.lua")

test.case("answers hello world as JSON", function()
    local response = handler({method = "GET", path = "/"})
    test.equal(response.status, 200)
    test.equal(response.headers["content-type"], "application/json")
    test.equal(json.parse(response.body), {hello = "world"})
end)

test.case("answers every path the same", function()
    local response = handler({method = "POST", path = "/any/path?x=1", body = "ignored"})
    test.equal(response.body, '{"hello":"world"}')
end)

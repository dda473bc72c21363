-- Tests for add-header.lua with an origin played by a fixture.
local handler = test.load("add-header.lua", {
    origin = function(request)
        return {status = 200, body = "origin saw " .. tostring(request.headers["x-served-by"])}
    end,
})

test.case("forwards with the added header", function()
    local response = handler({path = "/api", headers = {Accept = "text/plain"}})
    test.equal(response.status, 200)
    test.equal(response.body, "origin saw actias")
    test.equal(response.forwarded.headers.accept, "text/plain")
end)

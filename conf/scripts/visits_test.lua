-- Tests for visits.lua with a seeded key-value store.
local handler = test.load("visits.lua", {kv = {visits = {["/home"] = "41"}}})

test.case("counts on from the stored value", function()
    local response = handler({path = "/home"})
    test.equal(json.parse(response.body), {path = "/home", visits = 42})
end)

test.case("starts at one for a new path", function()
    local response = handler({path = "/new"})
    test.equal(json.parse(response.body).visits, 1)
    test.equal(json.parse(handler({path = "/new"}).body).visits, 2)
end)

-- Tests for session.lua: signing and checking the session cookie, and
-- the profile fetch, which a test function serves in place of the origin.
-- proxy/tests/stdlib.rs runs the same fetch against a real origin.
local fetched = {}
local handler = test.load("session.lua", {
    secrets = {SESSION_KEY = "test-key-not-for-production"},
    origin = function(request)
        return {status = 200, body = "origin saw " .. request.path}
    end,
    fetch = function(request)
        table.insert(fetched, request)
        if request.url == "http://localhost/users/ada" then
            return {status = 200, headers = {["content-type"] = "application/json"}, body = '{"name":"Ada"}'}
        end
        return {status = 404, body = "no such user"}
    end,
})

local function login(user)
    return handler({method = "POST", path = "/login?user=" .. user})
end

test.case("login sets a signed, HttpOnly session cookie", function()
    local response = login("ada")
    test.equal(response.status, 204)
    local set_cookie = response.headers["set-cookie"]
    test.equal(string.match(set_cookie, "^session=ada:%d+%.[%w_-]+; Max%-Age=3600; Path=/; HttpOnly; SameSite=Lax$") ~= nil, true, set_cookie)
end)

test.case("login rejects a missing or odd user name", function()
    test.equal(handler({method = "POST", path = "/login"}).status, 400)
    test.equal(login("a%20b").status, 400)
end)

test.case("a tampered or unsigned cookie is refused", function()
    local set_cookie = login("ada").headers["set-cookie"]
    local session = string.match(set_cookie, "^session=([^;]+)")
    local forged = string.gsub(session, "^ada", "eve")
    local response = handler({path = "/profile", headers = {cookie = "session=" .. forged}})
    test.equal(response.status, 401)
    test.equal(handler({path = "/profile", headers = {cookie = "session=eve:1"}}).status, 401)
    test.equal(handler({path = "/profile"}).status, 401)
end)

test.case("other paths go to the origin", function()
    local response = handler({path = "/about"})
    test.equal(response.body, "origin saw /about")
end)

test.case("a valid session fetches the profile", function()
    local set_cookie = login("ada").headers["set-cookie"]
    local session = string.match(set_cookie, "^session=([^;]+)")
    local response = handler({path = "/profile", headers = {cookie = "session=" .. session}})
    test.equal(response.status, 200)
    test.equal(json.parse(response.body).profile, {name = "Ada"})
    local request = fetched[#fetched]
    test.equal(request.method, "GET")
    test.equal(request.headers.accept, "application/json")
end)

test.case("a profile service error becomes 502", function()
    local set_cookie = login("bob").headers["set-cookie"]
    local session = string.match(set_cookie, "^session=([^;]+)")
    local response = handler({path = "/profile", headers = {cookie = "session=" .. session}})
    test.equal(response.status, 502)
    test.equal(response.body, "the profile service answered 404\n")
end)

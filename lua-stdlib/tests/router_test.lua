-- Tests for the router module. Run them with `actias test lua-stdlib/tests`.
local router = require("router")

-- Returns the error message of `f(...)`, failing the case when `f` succeeds.
local function error_of(f, ...)
    local ok, message = pcall(f, ...)
    test.equal(ok, false, "expected an error")
    return tostring(message)
end

-- Fails unless `text` contains `part` as plain text.
local function contains(text, part)
    test.equal(string.find(text, part, 1, true) ~= nil, true, string.format("%q in %q", part, text))
end

-- Returns a handler that returns `name` and the params it received.
local function tagged(name)
    return function(request, params)
        return {body = name, params = params, request = request}
    end
end

local function request(method, path)
    return {method = method, path = path, headers = {}}
end

test.case("match exact segments", function()
    test.equal(router.match("/health", "/health"), {})
    test.equal(router.match("/", "/"), {})
    test.equal(router.match("/health", "/healthz"), nil)
    test.equal(router.match("/health", "/health/"), nil)
    test.equal(router.match("/a/b", "/a"), nil)
    test.equal(router.match("/a/b", "/a/b"), {})
end)

test.case("match named parameters", function()
    test.equal(router.match("/users/:id", "/users/7"), {id = "7"})
    test.equal(router.match("/users/:id/posts/:post_id", "/users/7/posts/x-1"), {id = "7", post_id = "x-1"})
    test.equal(router.match("/users/:id", "/users/"), nil, "a parameter needs a non-empty segment")
    test.equal(router.match("/users/:id", "/users"), nil)
    test.equal(router.match("/users/:id", "/users/7/8"), nil)
    test.equal(router.match("/users/:id", "/accounts/7"), nil)
end)

test.case("match decodes %2F and %25", function()
    test.equal(router.match("/files/:name", "/files/a%2Fb"), {name = "a/b"})
    test.equal(router.match("/files/:name", "/files/100%25"), {name = "100%"})
    test.equal(router.match("/files/:name", "/files/%252F"), {name = "%2F"})
    test.equal(router.match("/files/:name", "/files/a%20b"), {name = "a%20b"}, "other escapes stay")
end)

test.case("match rest with star", function()
    test.equal(router.match("/static/*", "/static/css/site.css"), {["*"] = "css/site.css"})
    test.equal(router.match("/static/*", "/static/"), {["*"] = ""})
    test.equal(router.match("/static/*", "/static"), {["*"] = ""})
    test.equal(router.match("/static/*", "/static/a/"), {["*"] = "a/"})
    test.equal(router.match("/static/*", "/statics/a"), nil)
    test.equal(router.match("/static/*", "/"), nil)
    test.equal(router.match("/*", "/"), {["*"] = ""})
    test.equal(router.match("/*", "/a/b"), {["*"] = "a/b"})
    test.equal(router.match("/u/:id/*", "/u/7/a%2Fb/c"), {id = "7", ["*"] = "a%2Fb/c"})
    test.equal(router.match("/u/:id/*", "/u/"), nil)
end)

test.case("match path without slash", function()
    test.equal(router.match("/a", "a"), nil)
    test.equal(router.match("/*", ""), nil)
end)

test.case("match returns a fresh table", function()
    local first = router.match("/users/:id", "/users/1")
    first.id = "changed"
    test.equal(router.match("/users/:id", "/users/1"), {id = "1"})
    local exact = router.match("/a", "/a")
    exact.x = 1
    test.equal(router.match("/a", "/a"), {})
end)

test.case("match rejects invalid patterns", function()
    contains(error_of(router.match, "users", "/users"), 'path "users" must start with "/"')
    contains(error_of(router.match, "", "/"), 'must start with "/"')
    contains(error_of(router.match, 42, "/"), "path must be a string")
    contains(error_of(router.match, 42, "/"), "not a number")
    contains(error_of(router.match, "/a/*/b", "/a/x/b"), '"*" before the end')
    contains(error_of(router.match, "/a/*/", "/a/x/"), '"*" before the end')
    contains(error_of(router.match, "/files*", "/files"), 'inside the segment "files*"')
    contains(error_of(router.match, "/a/:", "/a/b"), "empty parameter name")
    contains(error_of(router.match, "/a/:/b", "/a/x/b"), "empty parameter name")
    contains(error_of(router.match, "/a/:user-id", "/a/1"), 'invalid parameter name "user-id"')
    contains(error_of(router.match, "/:id/x/:id", "/1/x/2"), 'names the parameter "id" twice')
    contains(error_of(router.match, "/a", 7), "path to be a string, not a number")
end)

test.case("get route receives params", function()
    local r = router.new()
    r:get("/users/:id", function(_, params)
        return {body = "user " .. params.id}
    end)
    test.equal(r:handle(request("GET", "/users/42")), {body = "user 42"})
end)

test.case("each verb method registers its method", function()
    local r = router.new()
    r:get("/x", tagged("get"))
    r:post("/x", tagged("post"))
    r:put("/x", tagged("put"))
    r:patch("/x", tagged("patch"))
    r:delete("/x", tagged("delete"))
    r:head("/x", tagged("head"))
    r:options("/x", tagged("options"))
    for _, method in ipairs({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}) do
        local response = r:handle(request(method, "/x"))
        test.equal(response.body, string.lower(method), method)
    end
end)

test.case("add takes any case and star", function()
    local r = router.new()
    r:add("post", "/a", tagged("post a"))
    r:add("PROPFIND", "/dav", tagged("propfind"))
    r:add("*", "/b", tagged("any b"))
    test.equal(r:handle(request("POST", "/a")).body, "post a")
    test.equal(r:handle(request("PROPFIND", "/dav")).body, "propfind")
    test.equal(r:handle(request("GET", "/b")).body, "any b")
    test.equal(r:handle(request("DELETE", "/b")).body, "any b")
end)

test.case("any matches every method", function()
    local r = router.new()
    r:any("/x", tagged("any"))
    for _, method in ipairs({"GET", "HEAD", "POST", "PURGE"}) do
        test.equal(r:handle(request(method, "/x")).body, "any", method)
    end
end)

test.case("first added route wins", function()
    local r = router.new()
    r:get("/users/me", tagged("me"))
    r:get("/users/:id", tagged("by id"))
    r:get("/users/:name", tagged("never"))
    test.equal(r:handle(request("GET", "/users/me")).body, "me")
    test.equal(r:handle(request("GET", "/users/7")).body, "by id")

    local reversed = router.new()
    reversed:get("/users/:id", tagged("by id"))
    reversed:get("/users/me", tagged("me"))
    test.equal(reversed:handle(request("GET", "/users/me")).body, "by id")
end)

test.case("method mismatch skips to later route", function()
    local r = router.new()
    r:post("/items/:id", tagged("post"))
    r:get("/items/*", tagged("get rest"))
    test.equal(r:handle(request("GET", "/items/3")).body, "get rest")
    test.equal(r:handle(request("POST", "/items/3")).body, "post")
end)

test.case("handler gets request and fresh params", function()
    local r = router.new()
    local seen = {}
    r:get("/users/:id", function(req, params)
        seen[#seen + 1] = params
        params.id = "changed"
        return {body = req.path}
    end)
    local req = request("GET", "/users/9")
    test.equal(r:handle(req), {body = "/users/9"})
    test.equal(r:handle(req), {body = "/users/9"})
    test.equal(#seen, 2)
    test.equal(seen[1] ~= seen[2], true, "params tables are distinct")
    test.equal(req, {method = "GET", path = "/users/9", headers = {}}, "request is unchanged")
end)

test.case("exact route gets empty params", function()
    local r = router.new()
    r:get("/health", tagged("health"))
    local response = r:handle(request("GET", "/health"))
    test.equal(response.params, {})
end)

test.case("star route gets rest param", function()
    local r = router.new()
    r:get("/static/*", tagged("static"))
    test.equal(r:handle(request("GET", "/static/js/app.js")).params, {["*"] = "js/app.js"})
    test.equal(r:handle(request("GET", "/static")).params, {["*"] = ""})
end)

test.case("handle returns nil from handler", function()
    local r = router.new()
    r:get("/pass", function()
        return nil
    end)
    test.equal(r:handle(request("GET", "/pass")), nil)
end)

test.case("head falls back to get route", function()
    local r = router.new()
    r:get("/page", tagged("get page"))
    test.equal(r:handle(request("HEAD", "/page")).body, "get page")
end)

test.case("head route beats get route", function()
    local r = router.new()
    r:get("/page", tagged("get page"))
    r:head("/page", tagged("head page"))
    test.equal(r:handle(request("HEAD", "/page")).body, "head page")
    test.equal(r:handle(request("GET", "/page")).body, "get page")
end)

test.case("head follows get over later catch-all", function()
    local r = router.new()
    r:get("/page", tagged("get page"))
    r:any("/*", tagged("catch-all"))
    test.equal(r:handle(request("HEAD", "/page")).body, "get page")
    test.equal(r:handle(request("HEAD", "/other")).body, "catch-all")
end)

test.case("head takes earlier any route", function()
    local r = router.new()
    r:any("/page", tagged("any page"))
    r:get("/page", tagged("get page"))
    test.equal(r:handle(request("HEAD", "/page")).body, "any page")
end)

test.case("unmatched path returns 404", function()
    local r = router.new()
    r:get("/a", tagged("a"))
    local expected = {status = 404, headers = {["content-type"] = "text/plain"}, body = "not found"}
    test.equal(r:handle(request("GET", "/b")), expected)
    test.equal(router.new():handle(request("GET", "/")), expected, "a router with no routes")
end)

test.case("404 response is a fresh table", function()
    local r = router.new()
    local first = r:handle(request("GET", "/x"))
    first.status = 200
    first.headers["content-type"] = "text/html"
    test.equal(r:handle(request("GET", "/x")).status, 404)
    test.equal(r:handle(request("GET", "/x")).headers["content-type"], "text/plain")
end)

test.case("not_found handler replaces 404", function()
    local r = router.new()
    r:get("/a", tagged("a"))
    local calls = {}
    r:not_found(function(...)
        calls[#calls + 1] = select("#", ...)
        local req = ...
        return {status = 404, body = "no " .. req.path}
    end)
    test.equal(r:handle(request("GET", "/b")), {status = 404, body = "no /b"})
    test.equal(calls, {1}, "called once with the request only")
    test.equal(r:handle(request("GET", "/a")).body, "a")
end)

test.case("not_found handler may return nil", function()
    local r = router.new()
    r:not_found(function()
        return nil
    end)
    test.equal(r:handle(request("GET", "/anything")), nil)
end)

test.case("wrong method returns 405", function()
    local r = router.new()
    r:post("/items", tagged("post"))
    r:get("/items", tagged("get"))
    r:delete("/items/:id", tagged("delete"))
    local response = r:handle(request("PUT", "/items"))
    test.equal(response, {
        status = 405,
        headers = {["content-type"] = "text/plain", allow = "GET, HEAD, POST"},
        body = "method not allowed",
    })
end)

test.case("405 allow lists each method once", function()
    local r = router.new()
    r:put("/x/:id", tagged("put"))
    r:put("/x/*", tagged("put rest"))
    r:head("/x/:id", tagged("head"))
    r:options("/x/1", tagged("options"))
    r:post("/y", tagged("other path"))
    test.equal(r:handle(request("GET", "/x/1")).headers.allow, "HEAD, OPTIONS, PUT")
    test.equal(r:handle(request("GET", "/x/2")).headers.allow, "HEAD, PUT")
end)

test.case("head gets 405 on post-only path", function()
    local r = router.new()
    r:post("/form", tagged("post"))
    local response = r:handle(request("HEAD", "/form"))
    test.equal(response.status, 405)
    test.equal(response.headers.allow, "POST")
end)

test.case("405 wins over not_found handler", function()
    local r = router.new()
    r:post("/form", tagged("post"))
    r:not_found(tagged("fallback"))
    test.equal(r:handle(request("GET", "/form")).status, 405)
    test.equal(r:handle(request("GET", "/other")).body, "fallback")
end)

test.case("request method is case-sensitive", function()
    local r = router.new()
    r:get("/x", tagged("get"))
    test.equal(r:handle(request("get", "/x")).status, 405)
end)

test.case("params decode in handle", function()
    local r = router.new()
    r:get("/files/:name", tagged("file"))
    test.equal(r:handle(request("GET", "/files/a%2Fb")).params, {name = "a/b"})
end)

test.case("add rejects invalid arguments", function()
    local r = router.new()
    contains(error_of(r.add, r, 7, "/x", tagged("x")), 'method must be a string such as "GET"')
    contains(error_of(r.add, r, "GE T", "/x", tagged("x")), 'method "GE T" is not a valid HTTP method')
    contains(error_of(r.add, r, "", "/x", tagged("x")), 'method "" is not a valid HTTP method')
    contains(error_of(r.add, r, "GET", "x", tagged("x")), 'path "x" must start with "/"')
    contains(error_of(r.add, r, "get", "/x", "oops"), "handler for GET /x must be a function, not a string")
    contains(error_of(r.any, r, "/x", nil), "handler for * /x must be a function, not a nil")
    test.equal(r:handle(request("GET", "/x")).status, 404, "failed adds leave no route")
end)

test.case("verb methods reject invalid arguments", function()
    local r = router.new()
    contains(error_of(r.get, r, "users", tagged("x")), 'router: path "users" must start with "/"')
    contains(error_of(r.get, r, "/x", "text"), "router: handler for GET /x must be a function, not a string")
    contains(error_of(r.post, r, "/x", {}), "handler for POST /x must be a function, not a table")
    contains(error_of(r.delete, r, "/a/*/b", tagged("x")), '"*" before the end')
    contains(error_of(r.put, r, "/a/:", tagged("x")), "empty parameter name")
    contains(error_of(r.patch, r, "/:a/:a", tagged("x")), 'names the parameter "a" twice')
    contains(error_of(r.head, r, nil, tagged("x")), "path must be a string")
    contains(error_of(r.options, r, "/x", 1), "handler for OPTIONS /x must be a function, not a number")
end)

test.case("methods need a colon call", function()
    local r = router.new()
    contains(error_of(r.get, "/x", tagged("x")), "call get with a colon")
    contains(error_of(r.add, "GET", "/x", tagged("x")), "call add with a colon")
    contains(error_of(r.handle, request("GET", "/x")), "call handle with a colon")
    contains(error_of(r.not_found, tagged("x")), "call not_found with a colon")
end)

test.case("not_found rejects non-functions", function()
    local r = router.new()
    contains(error_of(r.not_found, r, "404"), "not_found handler must be a function, not a string")
end)

test.case("handle rejects invalid requests", function()
    local r = router.new()
    contains(error_of(r.handle, r, nil), "handle expects the request table, not a nil")
    contains(error_of(r.handle, r, {method = "GET"}), "request.path must be a string, not a nil")
    contains(error_of(r.handle, r, {method = "GET", path = "x"}), 'request.path "x" must start with "/"')
    contains(error_of(r.handle, r, {path = "/"}), "request.method must be a string")
end)

test.case("errors point at the caller", function()
    local r = router.new()
    local calls = {
        function()
            r:get("bad", tagged("x"))
        end,
        function()
            r:add("GET", "/x", "bad")
        end,
        function()
            r:add("G T", "/x", tagged("x"))
        end,
        function()
            r:not_found(1)
        end,
        function()
            r:handle({method = "GET"})
        end,
        function()
            router.match("bad", "/")
        end,
        function()
            r.get("/x", tagged("x"))
        end,
    }
    for index, call in ipairs(calls) do
        local message = error_of(call)
        test.equal(string.find(message, "router_test.lua:", 1, true) ~= nil, true, index .. ": " .. message)
    end
end)

test.case("routers are independent", function()
    local first = router.new()
    local second = router.new()
    first:get("/a", tagged("first"))
    test.equal(first:handle(request("GET", "/a")).body, "first")
    test.equal(second:handle(request("GET", "/a")).status, 404)
end)

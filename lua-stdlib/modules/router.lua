-- Routes requests inside a fetch handler: `handle` calls the first added
-- route whose method and path pattern match `request.path`.
--
-- ```lua
-- local router = require("router")
-- local r = router.new()
-- r:get("/users/:id", function(request, params)
--     return {body = "user " .. params.id}
-- end)
-- add_event_listener("fetch", function(request)
--     return r:handle(request)
-- end)
-- ```
--
-- A pattern is a list of segments separated by "/": literal text, `:name`
-- (one non-empty segment, captured as `params.name`) or a final `*` (the
-- rest of the path, possibly empty, captured as `params["*"]` without its
-- leading slash). Patterns compile once, when a route is added.

---A route handler: receives the request and the parameters captured by
---the route's pattern, and returns a response, or nil to forward the
---request to the origin.
---@alias router.Handler fun(request: actias.Request, params: table<string, string>): actias.Response?

---A path pattern split into segments once, at registration.
---@class router.Pattern
---@field path string The pattern as written.
---@field exact boolean True when the pattern has neither `:name` nor `*`, so a string comparison decides.
---@field count integer Number of segments before any final `*`.
---@field literals (string|false)[] Literal text of each segment, false for a parameter.
---@field names (string|false)[] Parameter name of each segment, false for a literal.
---@field rest boolean True when the pattern ends in `/*`.

---One registered route.
---@class router.Route
---@field method string Uppercase method, or "*" for any method.
---@field pattern router.Pattern
---@field handler router.Handler

---A set of routes, created by `router.new()`.
---@class router.Router
---@field private _routes router.Route[]
---@field private _not_found (fun(request: actias.Request): actias.Response?)?
local Router = {}
Router.__index = Router

---@class router
local router = {}

-- Parameter names: letters, digits and "_", as in route patterns of the
-- proxy's config.
local PARAM_NAME = "^[%w_]+$"

-- An HTTP method is a token (RFC 9110, section 5.6.2).
local METHOD_TOKEN = "^[%w!#%$%%&'%*%+%-%.%^_`|~]+$"

-- `request.path` re-encodes "%" and "/" inside a segment, so a parameter
-- value decodes these two escapes and no others.
local SEGMENT_ESCAPES = {["%25"] = "%", ["%2F"] = "/", ["%2f"] = "/"}

-- Raises "router: " followed by the formatted message. `level` counts
-- stack frames from the function that calls `raise`, as in `error`.
local function raise(level, message, ...)
    error("router: " .. string.format(message, ...), level + 1)
end

local function decode_segment(segment)
    if string.find(segment, "%", 1, true) == nil then
        return segment
    end
    return (string.gsub(segment, "%%2[5Ff]", SEGMENT_ESCAPES))
end

-- Compiles a path pattern, raising an error at stack `level` (counted
-- from this function) when the pattern is invalid.
---@param path any
---@param level integer
---@return router.Pattern
local function compile(path, level)
    if type(path) ~= "string" then
        raise(level, 'path must be a string such as "/users/:id", not a %s', type(path))
    end
    if string.sub(path, 1, 1) ~= "/" then
        raise(level, 'path %q must start with "/"', path)
    end

    local literals, names, seen = {}, {}, {}
    local count = 0
    local rest = false
    local start = 2
    while true do
        local slash = string.find(path, "/", start, true)
        local segment = string.sub(path, start, slash and slash - 1 or -1)
        if string.find(segment, "*", 1, true) then
            if segment ~= "*" then
                raise(
                    level,
                    'path %q has "*" inside the segment %q; "*" must be a whole segment'
                        .. ' at the end, as in "/static/*"',
                    path,
                    segment
                )
            end
            if slash then
                raise(
                    level,
                    'path %q has "*" before the end; "*" must be the last segment, as in "/static/*"',
                    path
                )
            end
            rest = true
            break
        end

        count = count + 1
        if string.sub(segment, 1, 1) == ":" then
            local name = string.sub(segment, 2)
            if name == "" then
                raise(level, 'path %q has an empty parameter name; write ":name", as in "/users/:id"', path)
            end
            if not string.find(name, PARAM_NAME) then
                raise(
                    level,
                    'path %q has an invalid parameter name %q; use letters, digits and "_",'
                        .. ' as in "/users/:id"',
                    path,
                    name
                )
            end
            if seen[name] then
                raise(level, "path %q names the parameter %q twice; give each parameter its own name", path, name)
            end
            seen[name] = true
            literals[count] = false
            names[count] = name
        else
            literals[count] = segment
            names[count] = false
        end

        if not slash then
            break
        end
        start = slash + 1
    end

    local exact = not rest and next(seen) == nil
    return {
        path = path,
        exact = exact,
        count = count,
        literals = literals,
        names = names,
        rest = rest,
    }
end

-- Splits a path that starts with "/" into its segments: "/" gives {""},
-- "/a/b/" gives {"a", "b", ""}.
---@param path string
---@return string[] segments
---@return integer count
local function split(path)
    local segments = {}
    local count = 0
    local start = 2
    while true do
        local slash = string.find(path, "/", start, true)
        count = count + 1
        if slash then
            segments[count] = string.sub(path, start, slash - 1)
            start = slash + 1
        else
            segments[count] = string.sub(path, start)
            return segments, count
        end
    end
end

-- Matches the segments of a non-exact pattern against a split path and
-- returns a new params table, or nil. Builds the table only after every
-- segment has matched, so a failed match allocates nothing.
---@param pattern router.Pattern
---@param segments string[]
---@param count integer
---@return table<string, string>?
local function match_segments(pattern, segments, count)
    local size = pattern.count
    if pattern.rest then
        if count < size then
            return nil
        end
    elseif count ~= size then
        return nil
    end

    local literals = pattern.literals
    for i = 1, size do
        local literal = literals[i]
        if literal then
            if segments[i] ~= literal then
                return nil
            end
        elseif segments[i] == "" then
            return nil
        end
    end

    local params = {}
    local names = pattern.names
    for i = 1, size do
        local name = names[i]
        if name then
            params[name] = decode_segment(segments[i])
        end
    end
    if pattern.rest then
        params["*"] = table.concat(segments, "/", size + 1, count)
    end
    return params
end

---Creates a router with no routes.
---@return router.Router
function router.new()
    return setmetatable({_routes = {}, _not_found = nil}, Router)
end

---Matches `path` against `pattern` once, compiling the pattern on every
---call, so routers should use routes instead. Returns the captured
---parameters (an empty table when the pattern has none), or nil when the
---path does not match or does not start with "/". `path` is a normalised path such as `request.path`:
---`:name` values decode `%2F` and `%25`, and `params["*"]` stays as
---written. Raises an error when the pattern is invalid.
---
---```lua
---router.match("/users/:id", "/users/7")    --> {id = "7"}
---router.match("/static/*", "/static/a/b")  --> {["*"] = "a/b"}
---router.match("/users/:id", "/users/")     --> nil
---```
---@param pattern string
---@param path string
---@return table<string, string>?
function router.match(pattern, path)
    local compiled = compile(pattern, 3)
    if type(path) ~= "string" then
        raise(2, "match expects the path to be a string, not a %s", type(path))
    end
    if string.sub(path, 1, 1) ~= "/" then
        return nil
    end
    if compiled.exact then
        if path == compiled.path then
            return {}
        end
        return nil
    end
    return match_segments(compiled, split(path))
end

-- Raises an error unless `self` is a router. `call` is the method name
-- that the message shows.
local function check_router(self, call, level)
    if type(self) ~= "table" or getmetatable(self) ~= Router then
        raise(level + 1, "call %s with a colon on a router from router.new(), as in r:%s(...)", call, call)
    end
end

-- Compiles and appends one route. `method` is uppercase or "*". Errors
-- point at the script line that called r:get, r:add or r:any.
---@param self router.Router
---@param method string
---@param path string
---@param handler router.Handler
---@param call string
local function add_route(self, method, path, handler, call)
    check_router(self, call, 3)
    local pattern = compile(path, 4)
    if type(handler) ~= "function" then
        raise(3, "handler for %s %s must be a function, not a %s", method, path, type(handler))
    end
    local routes = self._routes
    routes[#routes + 1] = {method = method, pattern = pattern, handler = handler}
end

---Adds a route for `method`: a method name in any case, such as `"get"`
---or `"PROPFIND"`, or `"*"` for every method.
---@param method string
---@param path string
---@param handler router.Handler
function Router:add(method, path, handler)
    check_router(self, "add", 2)
    if type(method) ~= "string" then
        raise(2, 'method must be a string such as "GET", or "*" for any method, not a %s', type(method))
    end
    if method ~= "*" then
        if not string.find(method, METHOD_TOKEN) then
            raise(
                2,
                'method %q is not a valid HTTP method; use a name such as "GET", or "*" for any method',
                method
            )
        end
        method = string.upper(method)
    end
    add_route(self, method, path, handler, "add")
end

---Adds a route that takes every method, as `r:add("*", path, handler)`.
---@param path string
---@param handler router.Handler
function Router:any(path, handler)
    add_route(self, "*", path, handler, "any")
end

---Adds a GET route. HEAD requests also reach it unless a HEAD route matches.
---@param path string
---@param handler router.Handler
function Router:get(path, handler)
    add_route(self, "GET", path, handler, "get")
end

---Adds a POST route.
---@param path string
---@param handler router.Handler
function Router:post(path, handler)
    add_route(self, "POST", path, handler, "post")
end

---Adds a PUT route.
---@param path string
---@param handler router.Handler
function Router:put(path, handler)
    add_route(self, "PUT", path, handler, "put")
end

---Adds a PATCH route.
---@param path string
---@param handler router.Handler
function Router:patch(path, handler)
    add_route(self, "PATCH", path, handler, "patch")
end

---Adds a DELETE route.
---@param path string
---@param handler router.Handler
function Router:delete(path, handler)
    add_route(self, "DELETE", path, handler, "delete")
end

---Adds a HEAD route, which takes precedence over GET routes for HEAD requests.
---@param path string
---@param handler router.Handler
function Router:head(path, handler)
    add_route(self, "HEAD", path, handler, "head")
end

---Adds an OPTIONS route.
---@param path string
---@param handler router.Handler
function Router:options(path, handler)
    add_route(self, "OPTIONS", path, handler, "options")
end

---Sets the handler that `handle` calls, with the request only, when no
---route's pattern matches the path. Without one, `handle` returns a 404.
---@param handler fun(request: actias.Request): actias.Response?
function Router:not_found(handler)
    check_router(self, "not_found", 2)
    if type(handler) ~= "function" then
        raise(2, "the not_found handler must be a function, not a %s", type(handler))
    end
    self._not_found = handler
end

-- Returns the sorted "allow" header value for the routes whose pattern
-- matches, or nil when none does.
---@param routes router.Route[]
---@param path string
---@return string?
local function allowed_methods(routes, path)
    local segments, count
    local seen = {}
    local methods = {}
    for i = 1, #routes do
        local route = routes[i]
        local pattern = route.pattern
        local matched
        if pattern.exact then
            matched = path == pattern.path
        else
            if segments == nil then
                segments, count = split(path)
            end
            matched = match_segments(pattern, segments, count) ~= nil
        end
        if matched and not seen[route.method] then
            seen[route.method] = true
            methods[#methods + 1] = route.method
        end
    end
    if #methods == 0 then
        return nil
    end
    if seen.GET and not seen.HEAD then
        methods[#methods + 1] = "HEAD"
    end
    table.sort(methods)
    return table.concat(methods, ", ")
end

---Dispatches `request` and returns what the chosen handler returns,
---including nil (forward to the origin). The handler is the first added
---route whose method and pattern match `request.path`. A HEAD request
---takes the first matching HEAD route, and otherwise the route that a GET
---request would take. When no pattern matches, `handle` calls the
---`not_found` handler or returns a 404. When patterns match but none with
---the request's method, it returns a 405 with an `allow` header.
---@param request actias.Request
---@return actias.Response?
function Router:handle(request)
    check_router(self, "handle", 2)
    if type(request) ~= "table" then
        raise(2, "handle expects the request table, not a %s", type(request))
    end
    local path, method = request.path, request.method
    if type(path) ~= "string" then
        raise(2, "request.path must be a string, not a %s", type(path))
    end
    if string.sub(path, 1, 1) ~= "/" then
        raise(2, 'request.path %q must start with "/"', path)
    end
    if type(method) ~= "string" then
        raise(2, 'request.method must be a string such as "GET", not a %s', type(method))
    end

    local routes = self._routes
    local head = method == "HEAD"
    local segments, count -- set by the first non-exact pattern
    -- For HEAD: the route a GET request would take, used when no HEAD
    -- route matches.
    local get_route, get_params
    for i = 1, #routes do
        local route = routes[i]
        local route_method = route.method
        local eligible
        if head then
            eligible = route_method == "HEAD"
                or (get_route == nil and (route_method == "GET" or route_method == "*"))
        else
            eligible = route_method == method or route_method == "*"
        end

        if eligible then
            local pattern = route.pattern
            local params
            if pattern.exact then
                if path == pattern.path then
                    params = {}
                end
            else
                if segments == nil then
                    segments, count = split(path)
                end
                params = match_segments(pattern, segments, count)
            end

            if params then
                if not head or route_method == "HEAD" then
                    return route.handler(request, params)
                end
                get_route, get_params = route, params
            end
        end
    end
    if get_route then
        return get_route.handler(request, get_params)
    end

    local allow = allowed_methods(routes, path)
    if allow then
        return {
            status = 405,
            headers = {["content-type"] = "text/plain", allow = allow},
            body = "method not allowed",
        }
    end
    if self._not_found then
        return self._not_found(request)
    end
    return {status = 404, headers = {["content-type"] = "text/plain"}, body = "not found"}
end

return router

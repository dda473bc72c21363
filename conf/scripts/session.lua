-- Signed session cookies, and a profile page that the origin fills in.
--
-- POST /login?user=NAME sets a `session` cookie whose value is signed
-- with HMAC-SHA256 under the route's SESSION_KEY secret. GET /profile
-- checks the signature and the age of the cookie, then fetches the user's
-- record from the route's origin and wraps it in a response of its own.
-- Every other path goes to the origin unchanged.

local cookie = require("cookie")
local router = require("router")

-- How long a session stays valid, in seconds.
local SESSION_SECONDS = 3600

local function signature(value)
    return base64.url_encode(crypto.hmac("sha256", env.SESSION_KEY, value))
end

-- Returns `value.signature`, which only the holder of the key can make.
local function sign(value)
    return value .. "." .. signature(value)
end

-- Returns the user and issue time of a signed session, or nil when the
-- signature does not match or the session is too old.
local function verify(signed)
    if type(signed) ~= "string" then
        return nil
    end
    local value, given = string.match(signed, "^(.+)%.([%w_-]+)$")
    if not value or not crypto.constant_time_equal(given, signature(value)) then
        return nil
    end
    local user, issued = string.match(value, "^([%w_-]+):(%d+)$")
    if not user or time.now() - tonumber(issued) > SESSION_SECONDS * 1000 then
        return nil
    end
    return user
end

local app = router.new()

app:post("/login", function(request)
    local user = request.query.user
    if type(user) ~= "string" or not string.match(user, "^[%w_-]+$") then
        return {status = 400, body = "pass a user name: POST /login?user=NAME\n"}
    end
    local session = sign(user .. ":" .. time.now())
    return {
        status = 204,
        headers = {
            ["set-cookie"] = cookie.serialize("session", session, {
                path = "/",
                max_age = SESSION_SECONDS,
                http_only = true,
                same_site = "Lax",
            }),
        },
    }
end)

app:get("/profile", function(request)
    local user = verify(cookie.get(request, "session"))
    if not user then
        return {status = 401, body = "log in first: POST /login?user=NAME\n"}
    end
    -- A URL on the request's own host goes to the route's origin.
    local response = fetch("http://" .. request.host .. "/users/" .. url.encode(user), {
        headers = {accept = "application/json"},
        timeout_ms = 2000,
    })
    if not response.ok then
        return {status = 502, body = "the profile service answered " .. response.status .. "\n"}
    end
    return {
        headers = {["content-type"] = "application/json"},
        body = json.stringify({user = user, profile = json.parse(response.body)}),
    }
end)

-- Paths the router does not know are forwarded to the origin.
app:not_found(function()
    return nil
end)

add_event_listener("fetch", function(request)
    return app:handle(request)
end)

-- Reads `Cookie` request headers and builds `Set-Cookie` header values,
-- following the syntax of RFC 6265.
--
-- ```lua
-- local cookie = require("cookie")
-- add_event_listener("fetch", function(request)
--     if cookie.get(request, "session") == nil then
--         local value = cookie.serialize("session", "abc123", {path = "/", http_only = true})
--         return {status = 200, headers = {["set-cookie"] = value}}
--     end
-- end)
-- ```

---Attributes of a `Set-Cookie` header. Every field is optional.
---@class cookie.Options
---Lifetime in whole seconds, written as `Max-Age`. Zero or a negative number deletes the cookie.
---@field max_age integer?
---Expiry time in milliseconds since the Unix epoch, written as an HTTP date in `Expires`.
---@field expires number?
---Hosts that receive the cookie, written as `Domain`.
---@field domain string?
---Path prefix that receives the cookie, written as `Path`.
---@field path string?
---Send the cookie over HTTPS only (`Secure`).
---@field secure boolean?
---Hide the cookie from JavaScript (`HttpOnly`).
---@field http_only boolean?
---`"Strict"`, `"Lax"` or `"None"` in any case, written as `SameSite`. `"None"` requires `secure = true`.
---@field same_site string?
---Store the cookie per top-level site (`Partitioned`). Requires `secure = true`.
---@field partitioned boolean?

---@class cookie
local cookie = {}

-- Raises "cookie: " followed by the formatted message. `level` counts
-- stack frames from the function that calls `raise`, as in `error`.
local function raise(level, message, ...)
    error("cookie: " .. string.format(message, ...), level + 1)
end

-- A cookie name is an HTTP token (RFC 9110, section 5.6.2).
local TOKEN = "^[%w!#%$%%&'%*%+%-%.%^_`|~]+$"

-- Bytes that are not cookie-octets (RFC 6265, section 4.1.1): controls,
-- space, double quote, comma, semicolon, backslash, DEL and non-ASCII.
local INVALID_VALUE_BYTE = '[%c ",;\\\128-\255]'

-- Domain and Path values end at ";" and must not contain controls.
local INVALID_ATTRIBUTE_BYTE = "[%c;]"

local SAME_SITE = {strict = "Strict", lax = "Lax", none = "None"}

local KNOWN_OPTIONS = {
    domain = true,
    expires = true,
    http_only = true,
    max_age = true,
    partitioned = true,
    path = true,
    same_site = true,
    secure = true,
}
local KNOWN_OPTION_LIST = "domain, expires, http_only, max_age, partitioned, path, same_site, secure"

-- Range of `expires`: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z,
-- the years that an HTTP date can write with four digits.
local MIN_EXPIRES_MS = -62135596800000
local MAX_EXPIRES_MS = 253402300799999

-- Integers above 2^53 lose precision as Lua numbers.
local MAX_SAFE_INTEGER = 9007199254740991

-- Removes spaces and tabs at both ends.
local function trim(text)
    local first = string.find(text, "[^ \t]")
    if first == nil then
        return ""
    end
    local last = #text
    local byte = string.byte(text, last)
    while byte == 32 or byte == 9 do
        last = last - 1
        byte = string.byte(text, last)
    end
    if first == 1 and last == #text then
        return text
    end
    return string.sub(text, first, last)
end

-- Removes one pair of double quotes that wraps the whole value.
local function unquote(value)
    if #value >= 2 and string.byte(value, 1) == 34 and string.byte(value, -1) == 34 then
        return string.sub(value, 2, -2)
    end
    return value
end

-- Returns the name and value of one `name=value` pair of a Cookie header,
-- or nil when the pair has no "=" or an empty name.
local function split_pair(pair)
    local equals = string.find(pair, "=", 1, true)
    if equals == nil then
        return nil
    end
    local name = trim(string.sub(pair, 1, equals - 1))
    if name == "" then
        return nil
    end
    return name, unquote(trim(string.sub(pair, equals + 1)))
end

-- Adds the pairs of one Cookie header to `cookies`, keeping names that
-- are already there.
local function parse_into(cookies, header)
    for pair in string.gmatch(header, "[^;]+") do
        local name, value = split_pair(pair)
        if name ~= nil and cookies[name] == nil then
            cookies[name] = value
        end
    end
end

-- Returns the value of the first pair named `target_name` in one Cookie
-- header, or nil.
local function find_value(header, target_name)
    for pair in string.gmatch(header, "[^;]+") do
        local name, value = split_pair(pair)
        if name == target_name then
            return value
        end
    end
    return nil
end

-- Raises an error unless `header` is nil, a string or a list of strings.
local function check_header(header, level)
    local kind = type(header)
    if kind == "nil" or kind == "string" then
        return
    end
    if kind ~= "table" then
        raise(level + 1, "the Cookie header must be a string or a list of strings, not a %s", kind)
    end
    for index = 1, #header do
        local item = header[index]
        if type(item) ~= "string" then
            raise(level + 1, "item %d of the Cookie header list must be a string, not a %s", index, type(item))
        end
    end
end

---Parses a `Cookie` request header into a table of name to value. Takes
---a string, a list of strings (a repeated header) or nil (no header). The
---first pair with a given name wins. Spaces and tabs around names and
---values are removed, one pair of double quotes around a value is removed,
---and pairs without "=" are skipped. Values are not percent-decoded.
---
---```lua
---cookie.parse('a=1; b="two"; a=3')  --> {a = "1", b = "two"}
---```
---@param header string|string[]|nil
---@return table<string, string>
function cookie.parse(header)
    check_header(header, 2)
    local cookies = {}
    if type(header) == "string" then
        parse_into(cookies, header)
    elseif header ~= nil then
        for index = 1, #header do
            parse_into(cookies, header[index])
        end
    end
    return cookies
end

---Returns the value of cookie `name` in `request.headers.cookie`, read as
---`cookie.parse` does, or nil when the request has no such cookie. Stops
---at the first pair with that name, without building a table.
---@param request actias.Request
---@param name string
---@return string?
function cookie.get(request, name)
    if type(request) ~= "table" then
        raise(2, "get expects the request table as argument 1, not a %s", type(request))
    end
    if type(name) ~= "string" then
        raise(2, "get expects the cookie name as argument 2 to be a string, not a %s", type(name))
    end
    local headers = request.headers
    if headers == nil then
        return nil
    end
    if type(headers) ~= "table" then
        raise(2, "request.headers must be a table, not a %s", type(headers))
    end
    local header = headers.cookie
    check_header(header, 2)
    if type(header) == "string" then
        return find_value(header, name)
    end
    if header ~= nil then
        for index = 1, #header do
            local value = find_value(header[index], name)
            if value ~= nil then
                return value
            end
        end
    end
    return nil
end

local DAY_NAMES = {"Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"} -- 1970-01-01 was a Thursday
local MONTH_NAMES = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}
local MONTH_DAYS = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}

local function is_leap_year(year)
    return year % 4 == 0 and (year % 100 ~= 0 or year % 400 == 0)
end

-- Converts a day number (days since 1970-01-01, which may be negative) to
-- a year, month and day of the proleptic Gregorian calendar, from year 1.
local function civil_from_days(days)
    -- Counted from 0001-01-01, the calendar repeats every 400 years
    -- (146097 days). A cycle contains four centuries of 36524 days, except
    -- the last one with its extra leap day. A century contains four-year
    -- blocks of 1461 days, and a block contains years of 365 days, the last
    -- with 366.
    -- The math.min calls put the last day of a long unit in the last part.
    local remaining = days + 719162
    local cycles = math.floor(remaining / 146097)
    remaining = remaining - cycles * 146097
    local centuries = math.min(math.floor(remaining / 36524), 3)
    remaining = remaining - centuries * 36524
    local blocks = math.floor(remaining / 1461)
    remaining = remaining - blocks * 1461
    local years = math.min(math.floor(remaining / 365), 3)
    remaining = remaining - years * 365
    local year = 1 + cycles * 400 + centuries * 100 + blocks * 4 + years

    local month = 1
    while true do
        local length = MONTH_DAYS[month]
        if month == 2 and is_leap_year(year) then
            length = 29
        end
        if remaining < length then
            break
        end
        remaining = remaining - length
        month = month + 1
    end
    return year, month, remaining + 1
end

-- Formats milliseconds since the Unix epoch as an HTTP date (RFC 9110,
-- section 5.6.7), such as "Wed, 21 Oct 2015 07:28:00 GMT". Drops the
-- milliseconds.
local function format_http_date(milliseconds)
    local seconds = math.floor(milliseconds / 1000)
    local days = math.floor(seconds / 86400)
    local second_of_day = seconds - days * 86400
    local year, month, day = civil_from_days(days)
    return string.format(
        "%s, %02d %s %04d %02d:%02d:%02d GMT",
        DAY_NAMES[days % 7 + 1],
        day,
        MONTH_NAMES[month],
        year,
        math.floor(second_of_day / 3600),
        math.floor(second_of_day % 3600 / 60),
        second_of_day % 60
    )
end

-- Names a byte that a cookie value may not contain, for error messages.
local function describe_byte(byte)
    if byte == 32 then
        return "a space"
    elseif byte == 34 then
        return "a double quote"
    elseif byte == 44 then
        return "a comma"
    elseif byte == 59 then
        return "a semicolon"
    elseif byte == 92 then
        return "a backslash"
    elseif byte >= 128 then
        return string.format("the non-ASCII byte 0x%02X", byte)
    end
    return string.format("the control character 0x%02X", byte)
end

local function check_name(name)
    if type(name) ~= "string" then
        raise(3, "the cookie name must be a string, not a %s", type(name))
    end
    if name == "" then
        raise(3, "the cookie name must not be empty")
    end
    if not string.find(name, TOKEN) then
        raise(
            3,
            "the cookie name %q is invalid; use letters, digits and !#$%%&'*+-.^_`|~ only",
            name
        )
    end
end

-- The value itself is left out of error messages because cookie values
-- are often secrets, and error messages end up in logs.
local function check_value(name, value)
    if type(value) ~= "string" then
        raise(3, "the value of cookie %q must be a string, not a %s; convert it with tostring", name, type(value))
    end
    local inner, offset = value, 0
    if #value >= 2 and string.byte(value, 1) == 34 and string.byte(value, -1) == 34 then
        inner, offset = string.sub(value, 2, -2), 1
    end
    local position = string.find(inner, INVALID_VALUE_BYTE)
    if position then
        raise(
            3,
            "the value of cookie %q contains %s at byte %d, which a cookie value may not contain;"
                .. " encode the value first, for example with base64.encode or url.encode",
            name,
            describe_byte(string.byte(inner, position)),
            position + offset
        )
    end
end

local function check_boolean(options, key)
    local flag = options[key]
    if flag ~= nil and type(flag) ~= "boolean" then
        raise(3, "option %s must be true or false, not a %s", key, type(flag))
    end
    return flag == true
end

local function check_attribute_text(options, key)
    local text = options[key]
    if text == nil then
        return nil
    end
    if type(text) ~= "string" then
        raise(3, "option %s must be a string, not a %s", key, type(text))
    end
    if text == "" then
        raise(3, "option %s must not be empty; leave it out instead", key)
    end
    if string.find(text, INVALID_ATTRIBUTE_BYTE) then
        raise(3, 'option %s is %q, which contains ";" or a control character; remove them', key, text)
    end
    return text
end

local function check_max_age(options)
    local max_age = options.max_age
    if max_age == nil then
        return nil
    end
    local valid = type(max_age) == "number"
        and max_age == math.floor(max_age)
        and max_age >= -MAX_SAFE_INTEGER
        and max_age <= MAX_SAFE_INTEGER
    if not valid then
        raise(3, "option max_age must be a whole number of seconds, not %s", tostring(max_age))
    end
    return max_age
end

local function check_expires(options)
    local expires = options.expires
    if expires == nil then
        return nil
    end
    if type(expires) ~= "number" then
        raise(3, "option expires must be a number of milliseconds since the Unix epoch, not a %s", type(expires))
    end
    if not (expires >= MIN_EXPIRES_MS and expires <= MAX_EXPIRES_MS) then
        raise(
            3,
            "option expires is %s; pass milliseconds since the Unix epoch from %.0f (year 1) to %.0f (year 9999)",
            tostring(expires),
            MIN_EXPIRES_MS,
            MAX_EXPIRES_MS
        )
    end
    return expires
end

local function check_same_site(options)
    local same_site = options.same_site
    if same_site == nil then
        return nil
    end
    local canonical = type(same_site) == "string" and SAME_SITE[string.lower(same_site)]
    if not canonical then
        raise(3, 'option same_site must be "Strict", "Lax" or "None", not %s', string.format("%q", tostring(same_site)))
    end
    return canonical
end

---Builds a `Set-Cookie` header value: `name=value`, then the attributes
---that `options` sets, in the order Max-Age, Expires, Domain, Path,
---Secure, HttpOnly, SameSite, Partitioned. Raises an error for a name that
---is not a token, a value with bytes other than cookie-octets (encode it
---first, for example with `base64.encode` or `url.encode`), an unknown
---option or an invalid option value.
---
---```lua
---cookie.serialize("id", "a1", {max_age = 3600, path = "/", http_only = true})
-----> "id=a1; Max-Age=3600; Path=/; HttpOnly"
---```
---@param name string
---@param value string
---@param options cookie.Options?
---@return string
function cookie.serialize(name, value, options)
    check_name(name)
    check_value(name, value)
    if options == nil then
        return name .. "=" .. value
    end
    if type(options) ~= "table" then
        raise(2, "options must be a table, not a %s", type(options))
    end
    for key in pairs(options) do
        if not KNOWN_OPTIONS[key] then
            local shown = string.format("%q", tostring(key))
            raise(2, "unknown option %s; the known options are %s", shown, KNOWN_OPTION_LIST)
        end
    end

    local max_age = check_max_age(options)
    local expires = check_expires(options)
    local domain = check_attribute_text(options, "domain")
    local path = check_attribute_text(options, "path")
    local secure = check_boolean(options, "secure")
    local http_only = check_boolean(options, "http_only")
    local same_site = check_same_site(options)
    local partitioned = check_boolean(options, "partitioned")
    -- Browsers drop these cookies when Secure is missing, so raise here instead.
    if same_site == "None" and not secure then
        raise(2, 'same_site = "None" requires secure = true')
    end
    if partitioned and not secure then
        raise(2, "partitioned = true requires secure = true")
    end

    local parts = {name .. "=" .. value}
    if max_age ~= nil then
        parts[#parts + 1] = string.format("Max-Age=%d", max_age)
    end
    if expires ~= nil then
        parts[#parts + 1] = "Expires=" .. format_http_date(expires)
    end
    if domain ~= nil then
        parts[#parts + 1] = "Domain=" .. domain
    end
    if path ~= nil then
        parts[#parts + 1] = "Path=" .. path
    end
    if secure then
        parts[#parts + 1] = "Secure"
    end
    if http_only then
        parts[#parts + 1] = "HttpOnly"
    end
    if same_site ~= nil then
        parts[#parts + 1] = "SameSite=" .. same_site
    end
    if partitioned then
        parts[#parts + 1] = "Partitioned"
    end
    return table.concat(parts, "; ")
end

return cookie

-- Tests for the cookie module. Run them with `actias test lua-stdlib/tests`.
local cookie = require("cookie")

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

-- Returns the Expires attribute that serialize writes for `milliseconds`.
local function expires_of(milliseconds)
    local header = cookie.serialize("a", "b", {expires = milliseconds})
    return (string.match(header, "^a=b; Expires=(.*)$"))
end

test.case("parse single header", function()
    test.equal(cookie.parse("a=1; b=two"), {a = "1", b = "two"})
    test.equal(cookie.parse("session=abc123"), {session = "abc123"})
end)

test.case("parse nil and empty header", function()
    test.equal(cookie.parse(nil), {})
    test.equal(cookie.parse(), {})
    test.equal(cookie.parse(""), {})
    test.equal(cookie.parse(" ; ;"), {})
end)

test.case("parse first occurrence wins", function()
    test.equal(cookie.parse("a=1; a=2; b=3; a=4"), {a = "1", b = "3"})
end)

test.case("parse trims whitespace", function()
    test.equal(cookie.parse("  a = 1 ;\tb=\t2\t;c=3  "), {a = "1", b = "2", c = "3"})
    test.equal(cookie.parse("a=x y"), {a = "x y"}, "inner spaces stay")
end)

test.case("parse removes wrapping quotes", function()
    test.equal(cookie.parse('a="quoted"; b=""; c="'), {a = "quoted", b = "", c = '"'})
    test.equal(cookie.parse('a= "x" '), {a = "x"}, "quotes inside trimmed spaces")
    test.equal(cookie.parse('a="x'), {a = '"x'}, "unbalanced quote stays")
    test.equal(cookie.parse('a=""x""'), {a = '"x"'}, "only one pair is removed")
end)

test.case("parse skips pairs without equals", function()
    test.equal(cookie.parse("flag; a=1; other"), {a = "1"})
    test.equal(cookie.parse("=nameless; a=1"), {a = "1"}, "empty name is skipped")
end)

test.case("parse keeps equals in values", function()
    test.equal(cookie.parse("token=abc==; q=a=b"), {token = "abc==", q = "a=b"})
    test.equal(cookie.parse("a="), {a = ""})
end)

test.case("parse leaves percent escapes", function()
    test.equal(cookie.parse("a=x%20y; b=%3B"), {a = "x%20y", b = "%3B"})
end)

test.case("parse header list", function()
    test.equal(cookie.parse({"a=1; b=2", "c=3"}), {a = "1", b = "2", c = "3"})
    test.equal(cookie.parse({"a=1", "a=2; b=3", "b=4"}), {a = "1", b = "3"}, "first header wins")
    test.equal(cookie.parse({}), {})
end)

test.case("parse rejects other types", function()
    contains(error_of(cookie.parse, 42), "Cookie header must be a string or a list of strings, not a number")
    contains(error_of(cookie.parse, {"a=1", 2}), "item 2 of the Cookie header list must be a string, not a number")
end)

test.case("get reads cookie header", function()
    local request = {headers = {cookie = "a=1; session=xyz; a=2"}}
    test.equal(cookie.get(request, "session"), "xyz")
    test.equal(cookie.get(request, "a"), "1")
    test.equal(cookie.get(request, "missing"), nil)
end)

test.case("get reads header list", function()
    local request = {headers = {cookie = {"a=1", "b=2; a=3", "b=4"}}}
    test.equal(cookie.get(request, "a"), "1")
    test.equal(cookie.get(request, "b"), "2")
    test.equal(cookie.get(request, "c"), nil)
end)

test.case("get unquotes and trims", function()
    local request = {headers = {cookie = ' x = "quoted" ; flag; y=1'}}
    test.equal(cookie.get(request, "x"), "quoted")
    test.equal(cookie.get(request, "flag"), nil)
    test.equal(cookie.get(request, "y"), "1")
end)

test.case("get without cookie header", function()
    test.equal(cookie.get({headers = {}}, "a"), nil)
    test.equal(cookie.get({}, "a"), nil)
end)

test.case("get uses case-insensitive headers", function()
    local headers = setmetatable({}, {
        __index = function(t, name)
            return rawget(t, string.lower(name))
        end,
    })
    rawset(headers, "cookie", "a=1")
    test.equal(cookie.get({headers = headers}, "a"), "1")
end)

test.case("get rejects invalid arguments", function()
    contains(error_of(cookie.get, nil, "a"), "get expects the request table as argument 1, not a nil")
    contains(error_of(cookie.get, {headers = {}}, 1), "cookie name as argument 2 to be a string, not a number")
    contains(error_of(cookie.get, {headers = {cookie = 5}}, "a"), "must be a string or a list of strings")
    contains(error_of(cookie.get, {headers = "cookie: a=1"}, "a"), "request.headers must be a table, not a string")
end)

test.case("serialize name and value only", function()
    test.equal(cookie.serialize("id", "a1"), "id=a1")
    test.equal(cookie.serialize("id", "a1", {}), "id=a1")
    test.equal(cookie.serialize("empty", ""), "empty=")
    test.equal(cookie.serialize("q", '"wrapped"'), 'q="wrapped"')
    test.equal(cookie.serialize("b64", "YWJj+/=="), "b64=YWJj+/==")
    test.equal(cookie.serialize("token!#$%&'*+-.^_`|~", "x"), "token!#$%&'*+-.^_`|~=x")
end)

test.case("serialize writes each attribute", function()
    test.equal(cookie.serialize("a", "b", {max_age = 3600}), "a=b; Max-Age=3600")
    test.equal(cookie.serialize("a", "b", {max_age = 0}), "a=b; Max-Age=0")
    test.equal(cookie.serialize("a", "b", {max_age = -1}), "a=b; Max-Age=-1")
    test.equal(cookie.serialize("a", "b", {expires = 0}), "a=b; Expires=Thu, 01 Jan 1970 00:00:00 GMT")
    test.equal(cookie.serialize("a", "b", {domain = "example.com"}), "a=b; Domain=example.com")
    test.equal(cookie.serialize("a", "b", {path = "/app"}), "a=b; Path=/app")
    test.equal(cookie.serialize("a", "b", {secure = true}), "a=b; Secure")
    test.equal(cookie.serialize("a", "b", {http_only = true}), "a=b; HttpOnly")
    test.equal(cookie.serialize("a", "b", {same_site = "Lax"}), "a=b; SameSite=Lax")
    test.equal(cookie.serialize("a", "b", {partitioned = true, secure = true}), "a=b; Secure; Partitioned")
end)

test.case("serialize omits false flags", function()
    local header = cookie.serialize("a", "b", {secure = false, http_only = false, partitioned = false})
    test.equal(header, "a=b")
end)

test.case("serialize orders attributes", function()
    local header = cookie.serialize("sid", "v", {
        partitioned = true,
        same_site = "none",
        http_only = true,
        secure = true,
        path = "/",
        domain = "example.com",
        expires = 1445412480000,
        max_age = 60,
    })
    test.equal(
        header,
        "sid=v; Max-Age=60; Expires=Wed, 21 Oct 2015 07:28:00 GMT; Domain=example.com; Path=/;"
            .. " Secure; HttpOnly; SameSite=None; Partitioned"
    )
end)

test.case("serialize capitalises same_site", function()
    for _, input in ipairs({"strict", "STRICT", "Strict", "sTrIcT"}) do
        test.equal(cookie.serialize("a", "b", {same_site = input}), "a=b; SameSite=Strict", input)
    end
    test.equal(cookie.serialize("a", "b", {same_site = "lax"}), "a=b; SameSite=Lax")
    test.equal(cookie.serialize("a", "b", {same_site = "NONE", secure = true}), "a=b; Secure; SameSite=None")
end)

test.case("expires formats known dates", function()
    local cases = {
        {0, "Thu, 01 Jan 1970 00:00:00 GMT"},
        {1445412480000, "Wed, 21 Oct 2015 07:28:00 GMT"},
        {951782400000, "Tue, 29 Feb 2000 00:00:00 GMT"},
        {978220800000, "Sun, 31 Dec 2000 00:00:00 GMT"},
        {978307200000, "Mon, 01 Jan 2001 00:00:00 GMT"},
        {-2203891201000, "Wed, 28 Feb 1900 23:59:59 GMT"},
        {-2203891200000, "Thu, 01 Mar 1900 00:00:00 GMT"},
        {4107585600000, "Mon, 01 Mar 2100 12:00:00 GMT"},
        {1735689599000, "Tue, 31 Dec 2024 23:59:59 GMT"},
        {2147483648000, "Tue, 19 Jan 2038 03:14:08 GMT"},
        {-11644560000000, "Sun, 31 Dec 1600 00:00:00 GMT"},
        {-86400000, "Wed, 31 Dec 1969 00:00:00 GMT"},
    }
    for _, case in ipairs(cases) do
        test.equal(expires_of(case[1]), case[2], tostring(case[1]))
    end
end)

test.case("expires drops milliseconds", function()
    test.equal(expires_of(999), "Thu, 01 Jan 1970 00:00:00 GMT")
    test.equal(expires_of(1445412480999), "Wed, 21 Oct 2015 07:28:00 GMT")
    test.equal(expires_of(1500.5), "Thu, 01 Jan 1970 00:00:01 GMT")
    test.equal(expires_of(-1), "Wed, 31 Dec 1969 23:59:59 GMT", "rounds down before the epoch")
    test.equal(expires_of(-1000), "Wed, 31 Dec 1969 23:59:59 GMT")
end)

test.case("expires range limits", function()
    test.equal(expires_of(-62135596800000), "Mon, 01 Jan 0001 00:00:00 GMT")
    test.equal(expires_of(253402300799999), "Fri, 31 Dec 9999 23:59:59 GMT")
    contains(error_of(cookie.serialize, "a", "b", {expires = 253402300800000}), "option expires is")
    contains(error_of(cookie.serialize, "a", "b", {expires = -62135596800001}), "(year 1)")
    contains(error_of(cookie.serialize, "a", "b", {expires = 0 / 0}), "option expires is")
    contains(error_of(cookie.serialize, "a", "b", {expires = math.huge}), "option expires is")
end)

test.case("expires walks the calendar", function()
    -- Counts days from 1895-01-01 with a separate calendar and compares
    -- every date to 2105, crossing the century years 1900, 2000 and 2100.
    local months = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}
    local weekdays = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}
    local lengths = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}
    local year, month, day = 1895, 1, 1
    local weekday = 3 -- 1895-01-01 was a Tuesday, index 3 of `weekdays`
    local milliseconds = -2366755200000 -- 1895-01-01T00:00:00Z
    local failures = 0
    while year < 2106 do
        local expected = string.format("%s, %02d %s %04d 00:00:00 GMT", weekdays[weekday], day, months[month], year)
        if expires_of(milliseconds) ~= expected then
            failures = failures + 1
            test.equal(expires_of(milliseconds), expected, tostring(milliseconds))
        end
        local leap = year % 4 == 0 and (year % 100 ~= 0 or year % 400 == 0)
        local length = (month == 2 and leap) and 29 or lengths[month]
        day = day + 1
        if day > length then
            day = 1
            month = month + 1
            if month > 12 then
                month = 1
                year = year + 1
            end
        end
        weekday = weekday % 7 + 1
        milliseconds = milliseconds + 86400000
    end
    test.equal(failures, 0)
    test.equal(year, 2106, "the loop reached 2106")
end)

test.case("serialize rejects invalid names", function()
    contains(error_of(cookie.serialize, "", "v"), "cookie name must not be empty")
    contains(error_of(cookie.serialize, nil, "v"), "cookie name must be a string, not a nil")
    contains(error_of(cookie.serialize, 1, "v"), "cookie name must be a string, not a number")
    for _, name in ipairs({"a b", "a=b", "a;b", "a,b", 'a"b', "a(b", "a@b", "a/b", "a\tb", "caf\195\169"}) do
        contains(error_of(cookie.serialize, name, "v"), "is invalid; use letters, digits")
    end
end)

test.case("serialize rejects invalid values", function()
    local cases = {
        {"a b", "a space at byte 2"},
        {'a"b', "a double quote at byte 2"},
        {'"ab', "a double quote at byte 1"},
        {'ab"', "a double quote at byte 3"},
        {'"a"b"', "a double quote at byte 3"},
        {"a,b", "a comma at byte 2"},
        {"a;b", "a semicolon at byte 2"},
        {"a\\b", "a backslash at byte 2"},
        {"a\nb", "the control character 0x0A at byte 2"},
        {"\0", "the control character 0x00 at byte 1"},
        {"a\127", "the control character 0x7F at byte 2"},
        {"caf\195\169", "the non-ASCII byte 0xC3 at byte 4"},
        {'"a b"', "a space at byte 3"},
    }
    for _, case in ipairs(cases) do
        local message = error_of(cookie.serialize, "sid", case[1])
        contains(message, 'the value of cookie "sid" contains ' .. case[2])
        contains(message, "base64.encode or url.encode")
    end
end)

test.case("value errors omit the value", function()
    local message = error_of(cookie.serialize, "sid", "secret token")
    test.equal(string.find(message, "secret", 1, true), nil, message)
end)

test.case("serialize rejects non-string values", function()
    contains(error_of(cookie.serialize, "n", 5), 'value of cookie "n" must be a string, not a number')
    contains(error_of(cookie.serialize, "n", nil), "not a nil; convert it with tostring")
end)

test.case("serialize rejects unknown options", function()
    local message = error_of(cookie.serialize, "a", "b", {maxAge = 10})
    contains(message, 'unknown option "maxAge"')
    contains(message, "domain, expires, http_only, max_age, partitioned, path, same_site, secure")
    contains(error_of(cookie.serialize, "a", "b", {"/"}), 'unknown option "1"')
    contains(error_of(cookie.serialize, "a", "b", "path=/"), "options must be a table, not a string")
end)

test.case("serialize rejects invalid option values", function()
    local cases = {
        {{max_age = 1.5}, "option max_age must be a whole number of seconds, not 1.5"},
        {{max_age = "60"}, "option max_age must be a whole number of seconds, not 60"},
        {{max_age = math.huge}, "option max_age must be a whole number"},
        {{max_age = 0 / 0}, "option max_age must be a whole number"},
        {{expires = "tomorrow"}, "option expires must be a number of milliseconds since the Unix epoch, not a string"},
        {{domain = 1}, "option domain must be a string, not a number"},
        {{domain = ""}, "option domain must not be empty"},
        {{domain = "a.com; Secure"}, 'option domain is "a.com; Secure", which contains ";"'},
        {{domain = "a.com\r\n"}, "option domain is"},
        {{path = "/a;b"}, 'option path is "/a;b", which contains ";"'},
        {{path = "/a\0"}, "or a control character"},
        {{path = ""}, "option path must not be empty"},
        {{secure = "yes"}, "option secure must be true or false, not a string"},
        {{http_only = 1}, "option http_only must be true or false, not a number"},
        {{partitioned = "true"}, "option partitioned must be true or false, not a string"},
        {{same_site = "relaxed"}, 'option same_site must be "Strict", "Lax" or "None", not "relaxed"'},
        {{same_site = true}, 'option same_site must be "Strict", "Lax" or "None", not "true"'},
    }
    for _, case in ipairs(cases) do
        contains(error_of(cookie.serialize, "a", "b", case[1]), case[2])
    end
end)

test.case("same_site none requires secure", function()
    contains(error_of(cookie.serialize, "a", "b", {same_site = "None"}), 'same_site = "None" requires secure = true')
    contains(error_of(cookie.serialize, "a", "b", {same_site = "none", secure = false}), "requires secure = true")
end)

test.case("partitioned requires secure", function()
    contains(error_of(cookie.serialize, "a", "b", {partitioned = true}), "partitioned = true requires secure = true")
end)

test.case("errors point at the caller", function()
    local calls = {
        function()
            cookie.serialize("a b", "v")
        end,
        function()
            cookie.serialize("a", "v w")
        end,
        function()
            cookie.serialize("a", "v", {bogus = true})
        end,
        function()
            cookie.serialize("a", "v", {max_age = 0.5})
        end,
        function()
            cookie.serialize("a", "v", {same_site = "None"})
        end,
        function()
            cookie.parse(1)
        end,
        function()
            cookie.get({headers = {cookie = {1}}}, "a")
        end,
    }
    for index, call in ipairs(calls) do
        local message = error_of(call)
        test.equal(string.find(message, "cookie_test.lua:", 1, true) ~= nil, true, index .. ": " .. message)
    end
end)

test.case("serialize output parses back", function()
    local header = cookie.serialize("sid", '"a.b-c"', {path = "/", secure = true})
    local pair = string.match(header, "^[^;]*")
    test.equal(cookie.parse(pair), {sid = "a.b-c"})
end)

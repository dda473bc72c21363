---@meta actias

-- LuaLS type definitions of the globals that Actias gives fetch handler
-- scripts. Declarations only: Actias never loads this file.
-- Reference: docs/lua-api.md.

---A header or query value as the proxy supplies it: a string for a name
---seen once, a list of strings in arrival order for a repeated name.
---@alias actias.MultiValue string|string[]

---A header or query value that a script may set. A list writes one line
---(or one query parameter) per item, and `nil` removes the name.
---@alias actias.SetValue string|number|boolean|(string|number|boolean)[]

---The request passed to a fetch handler. A new table for each request.
---When the handler returns nothing, changes to `path`, `query` and
---`headers` are forwarded to the origin. Changes to other fields are ignored.
---@class actias.Request
---Method as sent, such as `"GET"`.
---@field method string
---`"http://"`, the Host header as sent and the request target as sent.
---@field url string
---Normalised path used for routing: decoded, dot-segments removed, `%` and
---`/` inside a segment re-encoded as `%25` and `%2F`. Set it to a string
---that starts with `/` to rewrite the forwarded path.
---@field path string
---Path as sent, without the query.
---@field raw_path string
---Form-decoded query parameters. A repeated name maps to a list. Setting
---`{}` removes the query from the forwarded request.
---@field query table<string, actias.MultiValue|actias.SetValue>
---Request headers with lowercase names. Lookups and assignments ignore case.
---A repeated header maps to a list in arrival order, and `nil` removes one.
---@field headers table<string, actias.MultiValue|actias.SetValue>
---Request body, `""` when there is none. `nil` when the body streams to the
---origin unread: chunked or over 64 KiB on a route with an origin.
---@field body string?
---Decoded parameters captured by the matched path pattern, such as `id`
---for `/users/:id`.
---@field params table<string, string>
---Normalised host: lowercase, without port or trailing dot. `""` when the
---request has no Host header.
---@field host string
---IP address of the TCP peer. `X-Forwarded-For` is not consulted.
---@field client_ip string
---Name of the matched route.
---@field route string

---A response returned by a fetch handler. The proxy sets `Content-Length`
---and `Date`, and ignores `Content-Length`, `Transfer-Encoding` and
---`Connection` from `headers`.
---@class actias.Response
---Status code from 200 to 599. Default: 200.
---@field status integer?
---Alias of `status`, used when `status` is nil.
---@field status_code integer?
---Header name to value. A list writes one header line per item.
---@field headers table<string, string|number|boolean|(string|number|boolean)[]>?
---Response body, possibly binary. Default: `""`.
---@field body string?

---A fetch handler: return a response, or nothing to forward the request to
---the route's origin with the changes made to `request`.
---@alias actias.FetchHandler fun(request: actias.Request): actias.Response?

---The event passed to a scheduled handler.
---@class actias.ScheduledEvent
---The route's `schedule` expression, such as `"*/5 * * * *"`, or
---`"manual"` for a run started with `POST /scheduled/ROUTE` on the admin
---listener.
---@field cron string
---Time the run was due, in milliseconds since the Unix epoch: the start of
---its minute for a scheduled run, the time of the admin request for a
---manual one.
---@field scheduled_time integer

---A scheduled handler. Its return value is ignored, and a raised error
---fails the run without stopping the schedule.
---@alias actias.ScheduledHandler fun(event: actias.ScheduledEvent)

---Registers the handler of an event: `"fetch"` for requests, or
---`"scheduled"` for runs on the route's `schedule`. A script registers at
---most one handler per event. An unknown event, a handler that is not a
---function and a second handler for the same event raise an error.
---
---```lua
---add_event_listener("fetch", function(request)
---    return {body = "hello\n"}
---end)
---add_event_listener("scheduled", function(event)
---    log.info("run due at", time.format_rfc3339(event.scheduled_time))
---end)
---```
---@param event "fetch"
---@param handler actias.FetchHandler
---@overload fun(event: "scheduled", handler: actias.ScheduledHandler)
function add_event_listener(event, handler) end

---Writes a line to the proxy's log at info level, as `log.info(...)`
---does. Actias replaces Lua's `print`, which writes to standard output.
---@param ... any
function print(...) end

---Returns a module that ships with Actias: `"router"` or `"cookie"`.
---Each module runs once per VM, and later calls return the same table.
---Nothing is read from the file system, and any other name raises an
---error that lists the available modules.
---
---```lua
---local router = require("router")
---local cookie = require("cookie")
---```
---@param name "router"
---@return router
---@overload fun(name: "cookie"): cookie
function require(name) end

---The route's `env` variables and `secrets` from the config, by name.
---Read-only: assigning to it raises an error. Secret values are replaced
---with `[secret NAME]` in the script's log lines and in logged errors.
---@type table<string, string>
env = {}

---JSON encoding and decoding.
json = {}

---Sentinel for JSON `null`, a truthy light userdata to compare with `==`.
---`json.parse` returns it for `null`, and `json.stringify` writes `null`.
---@type lightuserdata
json.null = nil

---Encodes `value` as compact JSON with object keys sorted by their bytes.
---A table is an array when its keys are exactly `1..n` with `n > 0`, or
---when it carries the `json.array` metatable. Any other table is an object.
---Raises an error for NaN, infinity, invalid UTF-8, a cycle, nesting deeper
---than 128 tables, a key that is neither a string nor a number, and a
---function or a userdata other than `json.null`.
---
---```lua
---json.stringify({b = 1, a = {true, "x"}})  --> {"a":[true,"x"],"b":1}
---```
---@param value any
---@return string
function json.stringify(value) end

---Decodes one JSON value. `null` becomes `json.null`, arrays get the
---`json.array` metatable, numbers become Lua numbers. Raises
---`json.parse: invalid JSON: ...` on invalid input.
---
---```lua
---local data = json.parse('{"id": 7, "tags": []}')
---```
---@param text string
---@return any
function json.parse(text) end

---Marks `t` (or a new empty table) as a JSON array and returns it, so that
---`json.stringify` writes `[]` for it even when it is empty. Replaces any
---previous metatable of `t`.
---
---```lua
---json.stringify({ids = json.array()})  --> {"ids":[]}
---```
---@param t? table
---@return table
function json.array(t) end

---Lines in the proxy's log under the target `actias::script`, with the
---route, the script and the request id. Arguments are joined with spaces.
log = {}

---Writes a line at debug level.
---@param ... any
function log.debug(...) end

---Writes a line at info level, as `print(...)` does.
---@param ... any
function log.info(...) end

---Writes a line at warn level.
---@param ... any
function log.warn(...) end

---Writes a line at error level.
---@param ... any
function log.error(...) end

---A key in a listing.
---@class actias.ListedKey
---@field name string The key.
---@field metadata any? Metadata stored with the key, decoded from JSON.
---@field expiration number? Expiry time, in seconds since the Unix epoch.

---One page of a listing.
---@class actias.ListPage
---@field keys actias.ListedKey[] Live keys in byte order.
---@field list_complete boolean True when no keys follow this page.
---@field cursor string? Pass to the next `list` call; nil when complete.

---Options of `put`.
---@class actias.PutOptions
---@field ttl number? Lifetime in seconds.
---@field metadata any? JSON-encodable value stored with the key (1024 bytes at most as JSON).

---Options of `list`.
---@class actias.ListOptions
---@field prefix string? Only keys that start with this prefix.
---@field limit integer? 1 to 1000; default 1000.
---@field cursor string? Cursor from a previous page with the same prefix.

---A handle on one key-value namespace.
---@class actias.Namespace
local Namespace = {}

---Returns the value of `key`, or nil when it is missing or expired.
---@param key string 1 to 512 bytes.
---@return string?
function Namespace:get(key) end

---Returns the value, its metadata and its expiry time in seconds.
---@param key string
---@return string? value
---@return any? metadata
---@return number? expiration
function Namespace:get_with_metadata(key) end

---Stores `value` under `key`; returns once the write is durable.
---@param key string 1 to 512 bytes.
---@param value string At most 25 MiB, binary-safe.
---@param options actias.PutOptions?
function Namespace:put(key, value, options) end

---Removes `key`; removing a missing key succeeds.
---@param key string
function Namespace:delete(key) end

---Lists live keys in byte order.
---@param options actias.ListOptions?
---@return actias.ListPage
function Namespace:list(options) end

---The key-value store.
kv = {}

---Opens a namespace that the route declares under `kv` in the config.
---@param name string
---@return actias.Namespace
function kv.namespace(name) end

---Digests, HMAC, constant-time comparison and random bytes. Every result
---is a raw binary string: pass it to `hex.encode` or `base64.encode` for
---text. Data, key and message arguments must be strings, and a number
---raises an error instead of being converted.
crypto = {}

---Returns the SHA-1 digest of `data`, 20 raw bytes.
---@param data string
---@return string
function crypto.sha1(data) end

---Returns the SHA-256 digest of `data`, 32 raw bytes.
---
---```lua
---hex.encode(crypto.sha256("abc"))  --> "ba7816bf...f20015ad"
---```
---@param data string
---@return string
function crypto.sha256(data) end

---Returns the SHA-512 digest of `data`, 64 raw bytes.
---@param data string
---@return string
function crypto.sha512(data) end

---Returns the HMAC of `message` under `key` as raw bytes. `algorithm` is
---`"sha1"`, `"sha256"` or `"sha512"`, in any case, and another name
---raises an error.
---
---```lua
---local signature = hex.encode(crypto.hmac("sha256", env.WEBHOOK_KEY, request.body))
---```
---@param algorithm "sha1"|"sha256"|"sha512"
---@param key string
---@param message string
---@return string
function crypto.hmac(algorithm, key, message) end

---Returns true when `a` and `b` are equal, in a time that depends only on
---their lengths, so that comparing a secret leaks nothing about where it
---differs. Strings of different lengths are unequal.
---@param a string
---@param b string
---@return boolean
function crypto.constant_time_equal(a, b) end

---Returns `n` random bytes from the operating system's secure random
---source. `n` is a whole number from 1 to 65536.
---@param n integer
---@return string
function crypto.random_bytes(n) end

---Base64 text forms of binary strings (RFC 4648).
base64 = {}

---Encodes `data` with the standard alphabet (`A-Z a-z 0-9 + /`), padded
---with `=`.
---@param data string
---@return string
function base64.encode(data) end

---Decodes standard, padded base64. Raises `base64.decode: invalid
---input: ...` on any other input, missing padding included.
---@param text string
---@return string
function base64.decode(text) end

---Encodes `data` with the URL-safe alphabet (`A-Z a-z 0-9 - _`) and no
---padding.
---@param data string
---@return string
function base64.url_encode(data) end

---Decodes URL-safe base64, with or without `=` padding. Raises
---`base64.url_decode: invalid input: ...` on other input.
---@param text string
---@return string
function base64.url_decode(text) end

---Hexadecimal text forms of binary strings.
hex = {}

---Encodes `data` as lowercase hexadecimal, two digits per byte.
---@param data string
---@return string
function hex.encode(data) end

---Decodes hexadecimal digits in either case. Raises an error for an odd
---number of characters, and for a character that is not a hexadecimal
---digit, naming its offset.
---@param text string
---@return string
function hex.decode(text) end

---Random and time-ordered UUIDs.
uuid = {}

---Returns a random (version 4) UUID, lowercase and hyphenated.
---@return string
function uuid.v4() end

---Returns a version 7 UUID, lowercase and hyphenated. It starts with the
---current time in milliseconds, and the UUIDs that one process creates
---sort in the order they were created.
---@return string
function uuid.v7() end

---The wall clock, and conversions between milliseconds since the Unix
---epoch and text. Times are UTC. A `ms` argument is a whole number from 0
---to 253402300799999 (the end of the year 9999).
time = {}

---Returns the current time in whole milliseconds since the Unix epoch.
---@return integer
function time.now() end

---Formats `ms` as RFC 3339 in UTC with milliseconds, such as
---`"2026-12-04T18:30:00.000Z"`.
---@param ms integer
---@return string
function time.format_rfc3339(ms) end

---Formats `ms` as an HTTP date, such as `"Fri, 04 Dec 2026 18:30:00 GMT"`.
---Milliseconds are dropped.
---@param ms integer
---@return string
function time.format_http_date(ms) end

---Parses an RFC 3339 time with any offset, such as
---`"2026-12-04T18:30:00Z"`, into milliseconds since the Unix epoch.
---Digits past the millisecond are dropped. Raises an error on other text.
---@param text string
---@return integer
function time.parse_rfc3339(text) end

---Parses an HTTP date, such as `"Fri, 04 Dec 2026 18:30:00 GMT"`, into
---milliseconds since the Unix epoch. Other RFC 2822 dates, such as ones
---with a `+0200` offset, and the obsolete RFC 850 and asctime forms are
---accepted too. Other text, and a time before 1970 or after 9999, raise an
---error.
---@param text string
---@return integer
function time.parse_http_date(text) end

---The parts of an absolute URL, as `url.parse` returns them.
---@class actias.ParsedUrl
---The URL in normalised form, such as with the host lowercased.
---@field href string
---Scheme, lowercase, without `:`, such as `"https"`.
---@field scheme string
---User name, when the URL has a non-empty one.
---@field username string?
---Password, when the URL has one.
---@field password string?
---Host name or address; an IPv6 address keeps its brackets.
---@field host string?
---Explicit port, or the scheme's default port (80 for `http`, 443 for
---`https`); nil for a scheme without a known default.
---@field port integer?
---Path, percent-encoded as in the URL, such as `"/a%20b"`.
---@field path string
---Raw query string without the `?`; nil when the URL has no `?`.
---@field query string?
---Fragment without the `#`; nil when the URL has no `#`.
---@field fragment string?

---URL parsing, percent-encoding and query strings.
url = {}

---Parses an absolute URL into its parts. Raises an error for a relative
---URL or an invalid one.
---
---```lua
---local parts = url.parse("https://example.com/a?x=1")
---parts.host, parts.port, parts.query  --> "example.com", 443, "x=1"
---```
---@param text string
---@return actias.ParsedUrl
function url.parse(text) end

---Percent-encodes every byte except `A-Z a-z 0-9 - . _ ~`, so a space
---becomes `%20`.
---@param text string
---@return string
function url.encode(text) end

---Decodes `%XX` escapes and keeps `+` as it is. Raises an error, naming
---the offset, for a `%` that two hexadecimal digits do not follow.
---@param text string
---@return string
function url.decode(text) end

---Parses a query string, with or without its leading `?`, into a table
---of names to values. `+` decodes to a space, a name without `=` gets
---`""`, and a repeated name gets a list of its values in order. A `%`
---that two hexadecimal digits do not follow raises an error.
---@param text string
---@return table<string, actias.MultiValue>
function url.parse_query(text) end

---Builds a query string without the leading `?`: names in sorted order,
---names and values encoded as `url.encode` does. A list value repeats the
---name once per item. Values may be strings, numbers or booleans.
---
---```lua
---url.build_query({q = "a b", page = 2, tag = {"x", "y"}})
-----> "page=2&q=a%20b&tag=x&tag=y"
---```
---@param query table<string, string|number|boolean|(string|number|boolean)[]>
---@return string
function url.build_query(query) end

---A header value that a subrequest may carry: a list sends one header
---line per item.
---@alias actias.FetchHeaderValue string|number|(string|number)[]

---A subrequest described as a table. The handler's own `request` table
---fits, since `fetch` reads only these fields of it.
---@class actias.FetchRequest
---Absolute `http` or `https` URL.
---@field url string
---Method in any case, such as `"POST"`. Default: `"GET"`.
---@field method string?
---Header name to value.
---@field headers table<string, actias.FetchHeaderValue>?
---Request body, possibly binary.
---@field body string?

---Options of `fetch`. A field set here wins over the same field of a
---request table. Any other key raises an error.
---@class actias.FetchOptions
---Method in any case, such as `"POST"`. Default: `"GET"`.
---@field method string?
---Header name to value. Connection and framing headers (`Connection`,
---`Content-Length`, `Host`, `Keep-Alive`, `Proxy-Connection`, `TE`,
---`Trailer`, `Transfer-Encoding`, `Upgrade`) are dropped.
---@field headers table<string, actias.FetchHeaderValue>?
---Request body, possibly binary.
---@field body string?
---Time limit in milliseconds, body included. The route's
---`fetch.timeout_ms` caps it.
---@field timeout_ms number?
---`"follow"` (default) follows at most 10 redirects in a row and raises an
---error at the 11th. `"manual"` returns the redirect response.
---Subrequests to the route's origin never follow redirects.
---@field redirect ("follow"|"manual")?

---The response to a subrequest, with its body read in full.
---@class actias.FetchResponse
---Status code.
---@field status integer
---True for a status from 200 to 299.
---@field ok boolean
---URL of the response, after any redirects. For a subrequest to the
---route's origin, it names the origin server's address.
---@field url string
---Response headers with lowercase names, and lookups ignore case. A
---repeated header maps to a list in arrival order.
---@field headers table<string, actias.MultiValue>
---Response body, possibly binary.
---@field body string

---Sends a subrequest and returns its response. The script yields while
---it waits. On a route with an origin, a URL whose host is the incoming
---request's host goes to that origin, so `fetch(request)` returns the
---origin's response, with the script's changes to `request.path`,
---`request.query` and `request.headers`. Other hosts must pass the route's
---`fetch.allow` list and resolve to public addresses. Raises `fetch: ...` when the host is not allowed, the input
---is invalid, the subrequest times out or fails, the body is larger than
---`fetch.max_response_bytes`, or the request has made
---`fetch.max_requests` subrequests.
---
---```lua
---local response = fetch("https://api.example.com/items", {
---    headers = {authorization = "Bearer " .. env.API_TOKEN},
---})
---```
---@param target string|actias.FetchRequest|actias.Request
---@param options actias.FetchOptions?
---@return actias.FetchResponse
function fetch(target, options) end

---Sends several subrequests concurrently, at most the route's
---`fetch.max_in_flight` at a time, and returns their responses in the
---order of `list`. All of them count against `fetch.max_requests` before
---any is sent. Raises the error of the first item, in list order, that
---fails, as `fetch` would.
---@param list (string|actias.FetchRequest|actias.Request)[]
---@return actias.FetchResponse[]
function fetch_all(list) end

---The test API of `actias test`, available in `*_test.lua` files only.
test = {}

---Options of `test.load`.
---@class actias.TestLoadOptions
---@field kv table<string, table<string, string>>? Namespaces to seed: `{ns = {key = value}}`.
---@field origin (fun(request: table): table)? Responds to requests the script forwards.
---@field fetch (fun(request: {method: string, url: string, headers: table, body: string?}): {status: integer?, headers: table?, body: string?})? Serves the script's subrequests in place of the network.
---@field env table<string, string>? Variables for the script's `env` table.
---@field secrets table<string, string>? Secrets for the script's `env` table, redacted from its log lines.

---Loads a script, relative to the test file, and returns its handler.
---@param script string
---@param options actias.TestLoadOptions?
---@return fun(request: table?): table
function test.load(script, options) end

---Runs one named case; a raised error fails it.
---@param name string
---@param body fun()
function test.case(name, body) end

---Fails the case unless `actual` deeply equals `expected`.
---@param actual any
---@param expected any
---@param message string?
function test.equal(actual, expected, message) end

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

---Registers the handler for an event. The only event is `"fetch"`, and a
---script registers exactly one fetch handler, so a second call raises an
---error.
---
---```lua
---add_event_listener("fetch", function(request)
---    return {body = "hello\n"}
---end)
---```
---@param event "fetch"
---@param handler actias.FetchHandler
function add_event_listener(event, handler) end

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

---The test API of `actias test`, available in `*_test.lua` files only.
test = {}

---Options of `test.load`.
---@class actias.TestLoadOptions
---@field kv table<string, table<string, string>>? Namespaces to seed: `{ns = {key = value}}`.
---@field origin (fun(request: table): table)? Responds to requests the script forwards.

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

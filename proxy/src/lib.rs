//! Actias: a reverse proxy on Pingora that runs Luau fetch handlers inline.
//!
//! A request flows through `proxy`, which looks up its route in the
//! current `snapshot` (built from `config` by `routing`, `origin` and
//! `script`), runs the route's script with the `bindings` installed, and
//! either responds from Lua or forwards to the origin.

pub mod admin;
pub mod bindings;
pub mod config;
pub mod connection;
pub mod fetch;
pub mod kv;
pub mod logging;
pub mod metrics;
pub mod origin;
pub mod proxy;
pub mod reload;
pub mod routing;
pub mod runtimes;
pub mod schedule;
pub mod script;
pub mod script_test;
pub mod server;
pub mod snapshot;

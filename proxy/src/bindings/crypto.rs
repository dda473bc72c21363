//! `crypto`: digests, HMAC, constant-time comparison and random bytes.
//!
//! Digests and random bytes are raw binary strings; `hex.encode` or
//! `base64.encode` turns them into text.

use hmac::{Hmac, Mac};
use mlua::{Error, Lua, Result, Table, Value};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

use super::args;

/// Most random bytes returned by one call.
const MAX_RANDOM_BYTES: i64 = 65_536;

/// Creates the `crypto` table.
pub fn create(lua: &Lua) -> Result<Table> {
    let table = lua.create_table()?;
    table.raw_set(
        "sha1",
        lua.create_function(|lua, data: Value| {
            let data = args::string("crypto.sha1", 1, data)?;
            lua.create_string(Sha1::digest(&*data.as_bytes()))
        })?,
    )?;
    table.raw_set(
        "sha256",
        lua.create_function(|lua, data: Value| {
            let data = args::string("crypto.sha256", 1, data)?;
            lua.create_string(Sha256::digest(&*data.as_bytes()))
        })?,
    )?;
    table.raw_set(
        "sha512",
        lua.create_function(|lua, data: Value| {
            let data = args::string("crypto.sha512", 1, data)?;
            lua.create_string(Sha512::digest(&*data.as_bytes()))
        })?,
    )?;
    table.raw_set("hmac", lua.create_function(hmac)?)?;
    table.raw_set(
        "constant_time_equal",
        lua.create_function(|_, (a, b): (Value, Value)| {
            let a = args::string("crypto.constant_time_equal", 1, a)?;
            let b = args::string("crypto.constant_time_equal", 2, b)?;
            Ok(constant_time_equal(&a.as_bytes(), &b.as_bytes()))
        })?,
    )?;
    table.raw_set(
        "random_bytes",
        lua.create_function(|lua, count: Value| {
            let count = args::integer("crypto.random_bytes", 1, count, 1..=MAX_RANDOM_BYTES)?;
            let mut bytes = vec![0u8; count as usize];
            getrandom::fill(&mut bytes).map_err(|e| {
                Error::runtime(format!(
                    "crypto.random_bytes: the operating system's random source failed: {e}"
                ))
            })?;
            lua.create_string(bytes)
        })?,
    )?;
    table.set_readonly(true);
    Ok(table)
}

/// `crypto.hmac(algorithm, key, message)`.
fn hmac(lua: &Lua, (algorithm, key, message): (Value, Value, Value)) -> Result<mlua::LuaString> {
    let algorithm = args::string("crypto.hmac", 1, algorithm)?;
    let key = args::string("crypto.hmac", 2, key)?;
    let message = args::string("crypto.hmac", 3, message)?;
    let (key, message) = (key.as_bytes(), message.as_bytes());
    let algorithm = algorithm.to_str()?.to_ascii_lowercase();
    let mac = match algorithm.as_str() {
        "sha1" => keyed::<Hmac<Sha1>>(&key, &message)?,
        "sha256" => keyed::<Hmac<Sha256>>(&key, &message)?,
        "sha512" => keyed::<Hmac<Sha512>>(&key, &message)?,
        other => {
            return Err(Error::runtime(format!(
                "crypto.hmac: unknown algorithm `{other}`; use \"sha1\", \"sha256\" or \"sha512\""
            )))
        }
    };
    lua.create_string(mac)
}

fn keyed<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8]) -> Result<Vec<u8>> {
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
        .map_err(|e| Error::runtime(format!("crypto.hmac: the key is not usable: {e}")))?;
    mac.update(message);
    Ok(mac.finalize().into_bytes().to_vec())
}

/// Compares two strings in time that depends only on their lengths.
fn constant_time_equal(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the compiler from turning the fold into an early exit.
    std::hint::black_box(difference) == 0
}

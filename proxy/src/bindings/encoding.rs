//! `base64` and `hex`: text forms of binary strings.
//!
//! Encoders take any Lua string, including raw digests; decoders reject
//! malformed input with an error that gives the offset of the first bad byte.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use mlua::{Error, Lua, Result, Table, Value};

use super::args;

/// URL-safe alphabet that accepts input with or without `=` padding.
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Creates the `base64` table.
pub fn create_base64(lua: &Lua) -> Result<Table> {
    let table = lua.create_table()?;
    table.raw_set(
        "encode",
        lua.create_function(|lua, data: Value| {
            let data = args::string("base64.encode", 1, data)?;
            args::check_result_size(lua, "base64.encode", data.as_bytes().len().div_ceil(3) * 4)?;
            lua.create_string(STANDARD.encode(&*data.as_bytes()))
        })?,
    )?;
    table.raw_set(
        "decode",
        lua.create_function(|lua, text: Value| {
            let text = args::string("base64.decode", 1, text)?;
            args::check_result_size(lua, "base64.decode", text.as_bytes().len() / 4 * 3 + 3)?;
            let decoded = STANDARD.decode(&*text.as_bytes()).map_err(|e| {
                decode_error(
                    "base64.decode",
                    e,
                    "standard base64 (A-Z a-z 0-9 + /, padded with =)",
                )
            })?;
            lua.create_string(decoded)
        })?,
    )?;
    table.raw_set(
        "url_encode",
        lua.create_function(|lua, data: Value| {
            let data = args::string("base64.url_encode", 1, data)?;
            args::check_result_size(
                lua,
                "base64.url_encode",
                data.as_bytes().len().div_ceil(3) * 4,
            )?;
            lua.create_string(URL_SAFE_NO_PAD.encode(&*data.as_bytes()))
        })?,
    )?;
    table.raw_set(
        "url_decode",
        lua.create_function(|lua, text: Value| {
            let text = args::string("base64.url_decode", 1, text)?;
            args::check_result_size(lua, "base64.url_decode", text.as_bytes().len() / 4 * 3 + 3)?;
            let decoded = URL_SAFE_LENIENT.decode(&*text.as_bytes()).map_err(|e| {
                decode_error("base64.url_decode", e, "URL-safe base64 (A-Z a-z 0-9 - _)")
            })?;
            lua.create_string(decoded)
        })?,
    )?;
    table.set_readonly(true);
    Ok(table)
}

fn decode_error(function: &str, error: base64::DecodeError, expected: &str) -> Error {
    Error::runtime(format!(
        "{function}: invalid input: {error}; pass {expected}"
    ))
}

/// Creates the `hex` table.
pub fn create_hex(lua: &Lua) -> Result<Table> {
    let table = lua.create_table()?;
    table.raw_set(
        "encode",
        lua.create_function(|lua, data: Value| {
            let data = args::string("hex.encode", 1, data)?;
            args::check_result_size(lua, "hex.encode", data.as_bytes().len() * 2)?;
            lua.create_string(encode_hex(&data.as_bytes()))
        })?,
    )?;
    table.raw_set(
        "decode",
        lua.create_function(|lua, text: Value| {
            let text = args::string("hex.decode", 1, text)?;
            args::check_result_size(lua, "hex.decode", text.as_bytes().len() / 2)?;
            lua.create_string(decode_hex(&text.as_bytes())?)
        })?,
    )?;
    table.set_readonly(true);
    Ok(table)
}

/// Lowercase hexadecimal form of `data`.
pub fn encode_hex(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(data.len() * 2);
    for byte in data {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0x0f)] as char);
    }
    out
}

fn decode_hex(text: &[u8]) -> Result<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return Err(Error::runtime(format!(
            "hex.decode: invalid input: {} characters; pass an even number of hexadecimal digits",
            text.len()
        )));
    }
    let digit = |position: usize| -> Result<u8> {
        let c = text[position];
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(Error::runtime(format!(
                "hex.decode: invalid input: byte {:?} at offset {position} is not a hexadecimal digit; \
                 pass only 0-9, a-f and A-F",
                char::from(c)
            ))),
        }
    };
    (0..text.len() / 2)
        .map(|i| Ok(digit(2 * i)? << 4 | digit(2 * i + 1)?))
        .collect()
}

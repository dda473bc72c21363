//! `uuid.v4()` and `uuid.v7()`: random and time-ordered identifiers.

use mlua::{Lua, Result, Table};

/// Creates the `uuid` table.
pub fn create(lua: &Lua) -> Result<Table> {
    let table = lua.create_table()?;
    table.raw_set(
        "v4",
        lua.create_function(|_, ()| Ok(uuid::Uuid::new_v4().hyphenated().to_string()))?,
    )?;
    table.raw_set(
        "v7",
        lua.create_function(|_, ()| Ok(uuid::Uuid::now_v7().hyphenated().to_string()))?,
    )?;
    table.set_readonly(true);
    Ok(table)
}

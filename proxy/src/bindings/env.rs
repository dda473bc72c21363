//! `env`: the variables and secrets that a route declares in the config.
//!
//! Both appear in one read-only table. Secret values are also kept apart so
//! that the script's log lines and error messages can be cleaned of them
//! before they are written anywhere.

use mlua::{Lua, Result, Table};

/// The variables and secrets of one route, stored as app data.
#[derive(Debug, Clone, Default)]
pub struct RouteEnv {
    pub variables: Vec<(String, String)>,
    pub secrets: Vec<(String, String)>,
}

impl RouteEnv {
    /// Replaces every secret value in `text` with `[secret NAME]`.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_string();
        // Longer values first, so that a secret that contains another is
        // replaced whole.
        let mut secrets: Vec<&(String, String)> = self.secrets.iter().collect();
        secrets.sort_by_key(|(_, value)| std::cmp::Reverse(value.len()));
        for (name, value) in secrets {
            if !value.is_empty() && text.contains(value.as_str()) {
                text = text.replace(value.as_str(), &format!("[secret {name}]"));
            }
        }
        text
    }
}

/// Creates the `env` table from the VM's [`RouteEnv`].
pub fn create(lua: &Lua) -> Result<Table> {
    let table = lua.create_table()?;
    if let Some(env) = lua.app_data_ref::<RouteEnv>() {
        for (name, value) in env.variables.iter().chain(&env.secrets) {
            table.raw_set(name.as_str(), value.as_str())?;
        }
    }
    table.set_readonly(true);
    Ok(table)
}

//! What a command produces: text for people and JSON for scripts. Commands never
//! print; the binary chooses which form to write.

use serde_json::Value;

/// A command's result in both forms.
#[derive(Clone, Debug)]
pub struct Output {
    /// For a terminal.
    pub human: String,
    /// For `--json`.
    pub json: Value,
}

impl Output {
    /// Both forms.
    pub fn new(human: impl Into<String>, json: Value) -> Output {
        Output { human: human.into(), json }
    }
}

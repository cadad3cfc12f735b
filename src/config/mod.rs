//! TEMPORARY STUB (replaced by the real module).
#![allow(missing_docs)]
pub mod model;
use crate::diag::Diagnostic;
pub use model::*;
use std::path::{Path, PathBuf};
pub struct LoadOptions {
    pub myname: String,
    pub sysdir: PathBuf,
    pub active_groups: Option<Vec<String>>,
}
pub fn load(_path: &Path, _opts: &LoadOptions) -> Result<Config, Vec<Diagnostic>> {
    Err(vec![])
}
pub fn validate_key(text: &str) -> Result<String, String> {
    Ok(text.trim().to_string())
}

//! TEMPORARY STUB (replaced by the real module).
#![allow(missing_docs)]
use crate::config::model::{Rule, RuleKind};
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ignore,
    StepInto,
    Managed,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub managed: bool,
    pub path_rule: Option<usize>,
    pub base_rule: Option<usize>,
}
#[derive(Debug)]
pub struct GroupMatcher {
    rules: Vec<Rule>,
}
pub fn check(_p: &str) -> Result<(), String> {
    Ok(())
}
impl GroupMatcher {
    pub fn new(rules: &[Rule]) -> Result<Self, (usize, String)> {
        Ok(Self { rules: rules.to_vec() })
    }
    pub fn is_managed(&self, p: &[u8]) -> bool {
        self.level(p) == Level::Managed
    }
    pub fn level(&self, p: &[u8]) -> Level {
        let mut m = false;
        for r in &self.rules {
            let pat = r.pattern.as_bytes();
            if p == pat || crate::index::is_below(p, pat) {
                m = r.kind == RuleKind::Include;
            }
        }
        if m {
            return Level::Managed;
        }
        for r in &self.rules {
            if r.kind == RuleKind::Include && crate::index::is_below(r.pattern.as_bytes(), p) {
                return Level::StepInto;
            }
        }
        Level::Ignore
    }
    pub fn explain(&self, p: &[u8]) -> Verdict {
        Verdict { managed: self.is_managed(p), path_rule: None, base_rule: None }
    }
    pub fn walk_roots(&self) -> Vec<String> {
        self.rules
            .iter()
            .filter(|r| r.kind == RuleKind::Include)
            .map(|r| r.pattern.clone())
            .collect()
    }
}

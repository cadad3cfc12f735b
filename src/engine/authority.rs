//! The server's view of groups, from the config: which peers may speak for
//! which group, with which key.

use crate::config::Config;
use crate::net::server::Authority;
use crate::proto::ErrorCode;

/// Group membership and keys of this node, as the receiving side needs them.
#[derive(Debug)]
pub struct ConfigAuthority {
    myname: String,
    /// (group, hosts, key) for every group this node is a member of.
    groups: Vec<(String, Vec<String>, Vec<u8>)>,
}

impl ConfigAuthority {
    /// Extracts what the server needs from the resolved config.
    pub fn new(config: &Config) -> Self {
        let groups = config
            .my_groups()
            .filter_map(|g| {
                let key = g.key.as_ref()?;
                Some((
                    g.name.clone(),
                    g.hosts.iter().map(|h| h.name.clone()).collect(),
                    key.0.as_bytes().to_vec(),
                ))
            })
            .collect();
        ConfigAuthority { myname: config.myname.clone(), groups }
    }
}

impl Authority for ConfigAuthority {
    fn node_name(&self) -> &str {
        &self.myname
    }

    fn group_key(&self, group: &str, peer: &str) -> Result<Vec<u8>, ErrorCode> {
        let Some((_, hosts, key)) = self.groups.iter().find(|(g, _, _)| g == group) else {
            return Err(ErrorCode::UnknownGroup);
        };
        if peer == self.myname || !hosts.iter().any(|h| h == peer) {
            return Err(ErrorCode::NotAHost);
        }
        Ok(key.clone())
    }
}

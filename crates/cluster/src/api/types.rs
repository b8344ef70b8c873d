//! The JSON bodies of the `/v1` API.

use crate::state::Response;
use crate::{Member, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The largest JSON request body accepted.
pub const MAX_REQUEST: usize = 4 << 20;

/// An error reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// Take a member in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    /// Its Raft id, unique in the cluster.
    pub id: NodeId,
    /// Its name and address.
    pub member: Member,
    /// Its addresses on each cluster network (empty: its endpoint's address
    /// on a network called `cluster`).
    #[serde(default)]
    pub networks: BTreeMap<String, Vec<IpAddr>>,
    /// What it is for.
    #[serde(default)]
    pub role: crate::state::HostRole,
}

/// Remove a member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaveRequest {
    /// Its Raft id.
    pub id: NodeId,
}

/// A committed command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteResult {
    /// The log index it was committed at.
    pub log_index: u64,
    /// What applying it gave.
    pub response: Response,
}

/// A member's view of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// This member's id.
    pub id: NodeId,
    /// Leader, Follower, Candidate, Learner, Shutdown.
    pub state: String,
    /// The current term.
    pub term: u64,
    /// The leader it knows, if any.
    pub leader: Option<NodeId>,
    /// The last log index it holds.
    pub last_log_index: Option<u64>,
    /// The last log index it applied.
    pub last_applied: Option<u64>,
    /// Voting members.
    pub voters: BTreeMap<NodeId, Member>,
    /// Non-voting members.
    pub learners: BTreeMap<NodeId, Member>,
}

impl Status {
    /// The member (voter or learner) on host `name`.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.voters
            .values()
            .chain(self.learners.values())
            .find(|m| m.name == name)
    }
}

/// Ask the CA-holding member for a host certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateRequest {
    /// The host's name.
    pub name: String,
    /// The addresses it is reached at.
    pub addresses: Vec<IpAddr>,
}

/// A host's credentials, as PEM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    /// The cluster CA's certificate.
    pub ca_cert: String,
    /// The host's certificate (TLS server and client).
    pub cert: String,
    /// The host's private key.
    pub key: String,
}

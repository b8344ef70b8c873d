//! Ferry's cluster database: hosts, VM definitions and events, replicated
//! with Raft (openraft 0.9) among the cluster's members.
//!
//! Layout follows openraft's key-value example: a type configuration
//! ([`TypeConfig`]), the log store ([`log_store`]) apart from the state
//! machine ([`state_machine`]), and three layers of HTTP endpoints — Raft
//! RPCs between members, membership administration, and the application
//! (commands and linearizable reads) — served over HTTPS with mutual TLS
//! ([`tls`]). Unlike the example, a log append is fsynced before it is
//! reported done, and reads wait for `ensure_linearizable`.
//!
//! Around it: [`node`] runs one member (Raft, its endpoint, [`heartbeat`]s
//! that mark hosts up and down); [`config`], [`setup`] and [`daemon`] are
//! what `ferry daemon` and `ferry cluster create|join|leave` do; [`client`]
//! speaks the `/v1` API; [`codec`] is the versioned, checksummed envelope
//! of everything persisted or sent.

pub mod api;
pub mod client;
pub mod codec;
pub mod config;
pub mod daemon;
pub mod fsutil;
pub mod heartbeat;
pub mod log_store;
pub mod network;
pub mod node;
pub mod server;
pub mod setup;
pub mod state;
pub mod state_machine;
pub mod tls;

use serde::{Deserialize, Serialize};
use std::io::Cursor;

/// A member's Raft id.
pub type NodeId = u64;

/// What the cluster knows of a member to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The host's name, which its certificate must carry.
    pub name: String,
    /// Where its cluster endpoint listens (`ip:port`).
    pub addr: String,
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

openraft::declare_raft_types!(
    /// Ferry's Raft types: log entries carry [`state::Request`]s.
    pub TypeConfig:
        D = state::Request,
        R = state::Response,
        NodeId = NodeId,
        Node = Member,
);

/// A Raft instance of the cluster database.
pub type Raft = openraft::Raft<TypeConfig>;

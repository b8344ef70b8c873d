//! The destination of a cluster migration as the source's agent sees it:
//! another host's agent, reached over the members' mutual-TLS API. The
//! source sends the spec it runs by value, and every QMP command for the
//! destination's QEMU goes through that agent ([`crate::incoming`]), so the
//! hosts share no files.

use crate::client::AgentCalls;
use crate::types::{IncomingRequest, QmpRequest, SharedProbe};
use ferry_cluster::client::{ApiClient, ClientError};
use ferry_cluster::Member;
use ferry_migrate::{Destination, MigrateError, Qmp};
use ferry_qemu::QmpError;
use serde_json::Value;
use std::path::Path;

/// Another host's agent as a migration's destination.
#[derive(Debug, Clone)]
pub struct AgentDestination {
    /// Calls that may take long (a start under TCG).
    pub long: ApiClient,
    /// Calls that should not (QMP commands).
    pub short: ApiClient,
    /// The destination's member endpoint.
    pub member: Member,
    /// Its address on the migration network.
    pub address: String,
    /// For a quick migration, the file that proves the state directory is
    /// shared.
    pub probe: Option<SharedProbe>,
}

/// The QEMU of an incoming VM on another host, through its agent.
#[derive(Debug, Clone)]
pub struct AgentQmp {
    client: ApiClient,
    member: Member,
    name: String,
}

impl Qmp for AgentQmp {
    async fn execute(&self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let req = QmpRequest {
            execute: command.to_string(),
            arguments,
        };
        AgentCalls(&self.client)
            .incoming_qmp(&self.member, &self.name, &req)
            .await
            .map_err(|e| QmpError::Relay {
                command: command.to_string(),
                message: relay_message(&e),
            })
    }
}

/// A refusal's own message (QEMU's, relayed), or the whole error.
fn relay_message(e: &ClientError) -> String {
    match e {
        ClientError::Api {
            member, message, ..
        } => format!("{member}: {message}"),
        other => crate::error::chain(other),
    }
}

impl Destination for AgentDestination {
    type Qmp = AgentQmp;

    fn migration_address(&self) -> &str {
        &self.address
    }

    async fn prepare(&self, name: &str, spec: &Path) -> Result<(), MigrateError> {
        let prepare = |m: String| MigrateError::Prepare(m);
        let text = std::fs::read_to_string(spec)
            .map_err(|e| prepare(format!("cannot read {}: {e}", spec.display())))?;
        let spec: Value = serde_json::from_str(&text)
            .map_err(|e| prepare(format!("{} is not valid JSON: {e}", spec.display())))?;
        let req = IncomingRequest {
            spec,
            probe: self.probe.clone(),
        };
        AgentCalls(&self.long)
            .incoming(&self.member, name, &req)
            .await
            .map_err(|e| prepare(relay_message(&e)))?;
        Ok(())
    }

    async fn connect(&self, name: &str) -> Result<AgentQmp, MigrateError> {
        Ok(AgentQmp {
            client: self.short.clone(),
            member: self.member.clone(),
            name: name.to_string(),
        })
    }

    async fn discard(&self, name: &str) -> Result<(), String> {
        AgentCalls(&self.short)
            .discard_incoming(&self.member, name)
            .await
            .map_err(|e| relay_message(&e))
    }
}

//! The agent's use of the cluster database: through its own member, which
//! forwards writes to the leader and answers reads linearizably.

use crate::{Agent, AgentError};
use ferry_cluster::client::ClientError;
use ferry_cluster::state::{ClusterState, Command};
use ferry_cluster::Member;
use std::time::Duration;

/// How long reads wait out a leader election.
pub const ELECTION_GRACE: Duration = Duration::from_secs(15);

impl Agent {
    /// The whole state, read linearizably. For a few seconds after a
    /// leader change the new leader cannot yet confirm its quorum (503):
    /// the read is retried for up to [`ELECTION_GRACE`].
    pub async fn state(&self) -> Result<ClusterState, AgentError> {
        let deadline = tokio::time::Instant::now() + ELECTION_GRACE;
        loop {
            match self.client.state(&self.me).await {
                Err(ClientError::Api { status: 503, .. })
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => return Ok(other?),
            }
        }
    }

    /// Commits `command`; a refusal is a conflict with its reason.
    pub async fn commit(&self, command: Command) -> Result<(), AgentError> {
        let r = self.client.write(&self.me, &command).await?;
        match r.response.refused {
            Some(why) => Err(AgentError::Conflict(why)),
            None => Ok(()),
        }
    }

    /// Commits `command`, retrying for up to a minute while the cluster
    /// cannot take writes (a leader election): for outcomes that must be
    /// recorded, such as a switchover that has happened.
    pub async fn commit_retrying(&self, command: Command) -> Result<(), AgentError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match self.commit(command.clone()).await {
                Err(AgentError::Cluster(e)) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!("recording {command:?} failed ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => return other,
            }
        }
    }

    /// The member endpoint of host `name` (from the Raft membership).
    pub async fn member_of(&self, name: &str) -> Result<Member, AgentError> {
        if name == self.name {
            return Ok(self.me.clone());
        }
        self.members().await?.get(name)
    }

    /// The Raft membership, read once for an operation that reaches many
    /// hosts.
    pub async fn members(&self) -> Result<Members, AgentError> {
        Ok(Members {
            me: (self.name.clone(), self.me.clone()),
            status: self.client.status(&self.me).await?,
        })
    }
}

/// The members' endpoints, as read at one moment.
#[derive(Debug, Clone)]
pub struct Members {
    me: (String, Member),
    status: ferry_cluster::api::types::Status,
}

impl Members {
    /// The member endpoint of host `name`.
    pub fn get(&self, name: &str) -> Result<Member, AgentError> {
        if name == self.me.0 {
            return Ok(self.me.1.clone());
        }
        self.status
            .member(name)
            .cloned()
            .ok_or_else(|| AgentError::NotFound(format!("no member host {name}")))
    }
}

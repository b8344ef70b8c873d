//! Calls to the VM-role endpoints: member to agent (`/v1/agent/...`) and
//! CLI to member (`/v1/roles/...`, `/v1/nodes/...`).

use crate::resources::HostResources;
use crate::types::{
    AgentStart, CreateRequest, DrainReport, IncomingRequest, MigrateRequest, Migrated, QmpRequest,
    RoleView, StartRequest, StopRequest,
};
use crate::AgentError;
use ferry_cluster::client::{ApiClient, ClientError};
use ferry_cluster::state::VmDef;
use ferry_cluster::Member;
use ferry_migrate::Progress;
use ferry_vm::StateRecord;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A VM started by the cluster: where, and its record there.
pub type Started = (String, StateRecord);

async fn get<R: DeserializeOwned>(c: &ApiClient, m: &Member, path: &str) -> Result<R, ClientError> {
    c.call::<(), R>(m, path, None, false).await
}

async fn post<B: Serialize, R: DeserializeOwned>(
    c: &ApiClient,
    m: &Member,
    path: &str,
    body: &B,
) -> Result<R, ClientError> {
    c.call(m, path, Some(body), false).await
}

/// A 404 as `None`.
fn optional<T>(r: Result<T, ClientError>) -> Result<Option<T>, ClientError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(ClientError::Api { status: 404, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Member-to-agent calls.
#[derive(Debug, Clone, Copy)]
pub struct AgentCalls<'a>(pub &'a ApiClient);

impl AgentCalls<'_> {
    /// The agent's host resources.
    pub async fn resources(&self, m: &Member) -> Result<HostResources, ClientError> {
        get(self.0, m, "/v1/agent/resources").await
    }

    /// The agent's record of a VM, if it has one.
    pub async fn record(&self, m: &Member, name: &str) -> Result<Option<StateRecord>, AgentError> {
        Ok(optional(
            get(self.0, m, &format!("/v1/agent/vms/{name}")).await,
        )?)
    }

    /// Starts a VM on that agent's host.
    pub async fn start(&self, m: &Member, def: &VmDef) -> Result<StateRecord, AgentError> {
        let body = AgentStart { def: def.clone() };
        Ok(post(
            self.0,
            m,
            &format!("/v1/agent/vms/{}/start", def.name),
            &body,
        )
        .await?)
    }

    /// Stops a VM on that agent's host.
    pub async fn stop(
        &self,
        m: &Member,
        name: &str,
        req: &StopRequest,
    ) -> Result<Option<StateRecord>, AgentError> {
        Ok(post(self.0, m, &format!("/v1/agent/vms/{name}/stop"), req).await?)
    }

    /// Migrates a VM away from that agent's host.
    pub async fn migrate(
        &self,
        m: &Member,
        name: &str,
        req: &MigrateRequest,
    ) -> Result<Migrated, AgentError> {
        Ok(post(self.0, m, &format!("/v1/agent/vms/{name}/migrate"), req).await?)
    }

    /// Prepares that agent's host for VM `name`'s incoming migration.
    pub async fn incoming(
        &self,
        m: &Member,
        name: &str,
        req: &IncomingRequest,
    ) -> Result<StateRecord, ClientError> {
        post(self.0, m, &format!("/v1/agent/vms/{name}/incoming"), req).await
    }

    /// Runs a QMP command on the QEMU of VM `name`'s incoming migration
    /// there.
    pub async fn incoming_qmp(
        &self,
        m: &Member,
        name: &str,
        req: &QmpRequest,
    ) -> Result<serde_json::Value, ClientError> {
        post(
            self.0,
            m,
            &format!("/v1/agent/vms/{name}/incoming/qmp"),
            req,
        )
        .await
    }

    /// Removes the destination's half of VM `name`'s failed migration there.
    pub async fn discard_incoming(&self, m: &Member, name: &str) -> Result<(), ClientError> {
        post::<_, serde_json::Value>(
            self.0,
            m,
            &format!("/v1/agent/vms/{name}/incoming/discard"),
            &(),
        )
        .await?;
        Ok(())
    }

    /// The tail of a VM's console log on that agent's host.
    pub async fn console_log(&self, m: &Member, name: &str) -> Result<String, AgentError> {
        Ok(get(self.0, m, &format!("/v1/agent/vms/{name}/console-log")).await?)
    }

    /// Cancels a migration that agent drives.
    pub async fn cancel(&self, m: &Member, name: &str) -> Result<(), AgentError> {
        post::<_, serde_json::Value>(self.0, m, &format!("/v1/agent/vms/{name}/cancel"), &())
            .await?;
        Ok(())
    }

    /// The progress of a migration that agent drives.
    pub async fn progress(&self, m: &Member, name: &str) -> Result<Option<Progress>, AgentError> {
        Ok(get(self.0, m, &format!("/v1/agent/migrations/{name}")).await?)
    }
}

/// The CLI's calls, through any member.
#[derive(Debug, Clone)]
pub struct Roles {
    /// The client (with a long timeout for starts, migrations, drains).
    pub client: ApiClient,
    /// The member asked.
    pub via: Member,
}

impl Roles {
    /// Defines a VM.
    pub async fn create(&self, req: &CreateRequest) -> Result<VmDef, ClientError> {
        post(&self.client, &self.via, "/v1/roles", req).await
    }
    /// Every VM.
    pub async fn list(&self) -> Result<Vec<RoleView>, ClientError> {
        get(&self.client, &self.via, "/v1/roles").await
    }
    /// One VM.
    pub async fn show(&self, name: &str) -> Result<RoleView, ClientError> {
        get(&self.client, &self.via, &format!("/v1/roles/{name}")).await
    }
    /// Starts a VM.
    pub async fn start(&self, name: &str, req: &StartRequest) -> Result<Started, ClientError> {
        post(
            &self.client,
            &self.via,
            &format!("/v1/roles/{name}/start"),
            req,
        )
        .await
    }
    /// Stops a VM.
    pub async fn stop(
        &self,
        name: &str,
        req: &StopRequest,
    ) -> Result<Option<StateRecord>, ClientError> {
        post(
            &self.client,
            &self.via,
            &format!("/v1/roles/{name}/stop"),
            req,
        )
        .await
    }
    /// Restarts a VM.
    pub async fn restart(&self, name: &str) -> Result<Started, ClientError> {
        post(
            &self.client,
            &self.via,
            &format!("/v1/roles/{name}/restart"),
            &(),
        )
        .await
    }
    /// Removes a stopped VM's definition.
    pub async fn remove(&self, name: &str) -> Result<serde_json::Value, ClientError> {
        post(
            &self.client,
            &self.via,
            &format!("/v1/roles/{name}/remove"),
            &(),
        )
        .await
    }
    /// Migrates a VM.
    pub async fn migrate(&self, name: &str, req: &MigrateRequest) -> Result<Migrated, ClientError> {
        post(
            &self.client,
            &self.via,
            &format!("/v1/roles/{name}/migrate"),
            req,
        )
        .await
    }
    /// Cancels a VM's migration (it stays on the source).
    pub async fn cancel(&self, name: &str) -> Result<serde_json::Value, ClientError> {
        post(
            &self.client,
            &self.via,
            &format!("/v1/roles/{name}/cancel"),
            &(),
        )
        .await
    }
    /// A migration's latest progress sample, if one is running.
    pub async fn progress(&self, name: &str) -> Result<Option<Progress>, ClientError> {
        get(
            &self.client,
            &self.via,
            &format!("/v1/roles/{name}/progress"),
        )
        .await
    }
    /// The tail of a VM's console log, from its owner.
    pub async fn console_log(&self, name: &str) -> Result<String, ClientError> {
        get(
            &self.client,
            &self.via,
            &format!("/v1/roles/{name}/console-log"),
        )
        .await
    }
    /// Drains a host.
    pub async fn drain(&self, host: &str) -> Result<DrainReport, ClientError> {
        post(
            &self.client,
            &self.via,
            &format!("/v1/nodes/{host}/drain"),
            &(),
        )
        .await
    }
    /// Resumes a paused host.
    pub async fn resume(&self, host: &str) -> Result<serde_json::Value, ClientError> {
        post(
            &self.client,
            &self.via,
            &format!("/v1/nodes/{host}/resume"),
            &(),
        )
        .await
    }
}

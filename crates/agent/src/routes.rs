//! The HTTP endpoints of VM roles. Parsing here, acting in [`crate::roles`]
//! and [`crate::local`].
//!
//! Any member: `GET|POST /v1/roles`, `GET /v1/roles/{name}`,
//! `POST /v1/roles/{name}/{start,stop,restart,migrate,remove}`,
//! `GET /v1/roles/{name}/progress`, `POST /v1/roles/{name}/cancel` (the
//! migration), `POST /v1/nodes/{host}/{drain,resume}`.
//! This host's agent: `GET /v1/agent/resources`, `GET /v1/agent/vms/{name}`,
//! `POST /v1/agent/vms/{name}/{start,stop,migrate,cancel}`, the
//! destination's half of a migration `POST /v1/agent/vms/{name}/incoming`
//! and `.../incoming/{qmp,discard}`,
//! `GET /v1/agent/migrations/{name}`, `GET /v1/agent/vms/{name}/console`
//! (an HTTP upgrade to the serial console) and `.../console-log`.

use crate::resources::{self, HostResources};
use crate::types::{
    AgentStart, CreateRequest, IncomingRequest, MigrateRequest, QmpRequest, StartRequest,
    StopRequest,
};
use crate::{Agent, AgentError};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

type Reply = Result<Json<Value>, AgentError>;

/// A JSON body, or a 400 that says what is wrong with it.
fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, AgentError> {
    b.map(|Json(t)| t)
        .map_err(|e| AgentError::BadRequest(format!("request body: {}", e.body_text())))
}

fn reply<T: serde::Serialize>(t: T) -> Reply {
    serde_json::to_value(t)
        .map(Json)
        .map_err(|e| AgentError::Internal(e.to_string()))
}

/// The routes, to merge into the member's router.
pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/v1/roles", get(list).post(create))
        .route("/v1/roles/{name}", get(show))
        .route("/v1/roles/{name}/start", post(start))
        .route("/v1/roles/{name}/stop", post(stop))
        .route("/v1/roles/{name}/restart", post(restart))
        .route("/v1/roles/{name}/remove", post(remove))
        .route("/v1/roles/{name}/migrate", post(migrate))
        .route("/v1/roles/{name}/progress", get(progress))
        .route("/v1/roles/{name}/cancel", post(cancel))
        .route("/v1/roles/{name}/console-log", get(console_log))
        .route("/v1/nodes/{host}/drain", post(drain))
        .route("/v1/nodes/{host}/resume", post(resume))
        .route("/v1/agent/resources", get(agent_resources))
        .route("/v1/agent/vms/{name}", get(agent_record))
        .route("/v1/agent/vms/{name}/start", post(agent_start))
        .route("/v1/agent/vms/{name}/stop", post(agent_stop))
        .route("/v1/agent/vms/{name}/migrate", post(agent_migrate))
        .route("/v1/agent/vms/{name}/incoming", post(agent_incoming))
        .route(
            "/v1/agent/vms/{name}/incoming/qmp",
            post(agent_incoming_qmp),
        )
        .route(
            "/v1/agent/vms/{name}/incoming/discard",
            post(agent_incoming_discard),
        )
        .route("/v1/agent/migrations/{name}", get(agent_progress))
        .route("/v1/agent/vms/{name}/cancel", post(agent_cancel))
        .route("/v1/agent/vms/{name}/console", get(crate::console::relay))
        .route("/v1/agent/vms/{name}/console-log", get(agent_console_log))
        .with_state(agent)
}

async fn list(State(a): State<Arc<Agent>>) -> Reply {
    reply(a.list().await?)
}

async fn create(
    State(a): State<Arc<Agent>>,
    b: Result<Json<CreateRequest>, JsonRejection>,
) -> Reply {
    reply(a.create(body(b)?).await?)
}

async fn show(State(a): State<Arc<Agent>>, Path(name): Path<String>) -> Reply {
    reply(a.show(&name).await?)
}

async fn start(
    State(a): State<Arc<Agent>>,
    Path(name): Path<String>,
    b: Result<Json<StartRequest>, JsonRejection>,
) -> Reply {
    reply(a.start(&name, &body(b)?).await?)
}

async fn stop(
    State(a): State<Arc<Agent>>,
    Path(name): Path<String>,
    b: Result<Json<StopRequest>, JsonRejection>,
) -> Reply {
    reply(a.stop(&name, &body(b)?).await?)
}

async fn restart(State(a): State<Arc<Agent>>, Path(name): Path<String>) -> Reply {
    reply(a.restart(&name).await?)
}

async fn remove(State(a): State<Arc<Agent>>, Path(name): Path<String>) -> Reply {
    a.remove(&name).await?;
    reply(json!({ "removed": name }))
}

async fn migrate(
    State(a): State<Arc<Agent>>,
    Path(name): Path<String>,
    b: Result<Json<MigrateRequest>, JsonRejection>,
) -> Reply {
    reply(a.migrate(&name, &body(b)?).await?)
}

async fn progress(State(a): State<Arc<Agent>>, Path(name): Path<String>) -> Reply {
    reply(a.progress(&name).await?)
}

async fn console_log(State(a): State<Arc<Agent>>, Path(name): Path<String>) -> Reply {
    reply(a.console_log(&name).await?)
}

async fn agent_console_log(Path(name): Path<String>) -> Reply {
    reply(crate::console::log_tail(&name)?)
}

async fn cancel(State(a): State<Arc<Agent>>, Path(name): Path<String>) -> Reply {
    a.cancel_migration(&name).await?;
    reply(json!({ "cancelled": name }))
}

async fn agent_cancel(State(a): State<Arc<Agent>>, Path(name): Path<String>) -> Reply {
    a.cancel_here(&name)?;
    reply(json!({ "cancelled": name }))
}

async fn drain(State(a): State<Arc<Agent>>, Path(host): Path<String>) -> Reply {
    reply(a.drain(&host).await?)
}

async fn resume(State(a): State<Arc<Agent>>, Path(host): Path<String>) -> Reply {
    a.resume_host(&host).await?;
    reply(json!({ "resumed": host }))
}

/// This host's resources.
pub fn host_resources(agent: &Agent) -> Result<HostResources, AgentError> {
    let text = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| AgentError::Internal(format!("/proc/meminfo: {e}")))?;
    let (total, available) = resources::parse_meminfo(&text).ok_or_else(|| {
        AgentError::Internal("/proc/meminfo lacks MemTotal or MemAvailable".into())
    })?;
    let mut vm_memory = 0;
    let mut running = Vec::new();
    for rec in ferry_vm::control::list()?
        .into_iter()
        .filter(|r| !r.state.is_final())
    {
        let spec = ferry_vm::RunDir::for_vm(&rec.name).spec();
        let memory = std::fs::read_to_string(&spec)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v.get("memory_mib").and_then(Value::as_u64))
            .unwrap_or(0);
        vm_memory += memory;
        running.push(rec.name);
    }
    Ok(HostResources {
        host: agent.name.clone(),
        mem_total_mib: total,
        mem_available_mib: available,
        vm_memory_mib: vm_memory,
        free_mib: resources::free_mib(total, available, vm_memory),
        cpu_profile: agent.cpu_profile(),
        running,
        tls_dir: Some(agent.tls_dir.clone()),
    })
}

async fn agent_resources(State(a): State<Arc<Agent>>) -> Reply {
    reply(host_resources(&a)?)
}

async fn agent_record(Path(name): Path<String>) -> Reply {
    match crate::local::record(&name)? {
        Some(r) => reply(r),
        None => Err(AgentError::NotFound(format!("no VM {name} on this host"))),
    }
}

async fn agent_start(
    State(a): State<Arc<Agent>>,
    Path(name): Path<String>,
    b: Result<Json<AgentStart>, JsonRejection>,
) -> Reply {
    let req = body(b)?;
    if req.def.name != name {
        return Err(AgentError::BadRequest(format!(
            "the definition is of VM {}, not {name}",
            req.def.name
        )));
    }
    reply(a.start_here(req.def).await?)
}

async fn agent_stop(
    State(a): State<Arc<Agent>>,
    Path(name): Path<String>,
    b: Result<Json<StopRequest>, JsonRejection>,
) -> Reply {
    reply(a.stop_here(&name, &body(b)?).await?)
}

async fn agent_migrate(
    State(a): State<Arc<Agent>>,
    Path(name): Path<String>,
    b: Result<Json<MigrateRequest>, JsonRejection>,
) -> Reply {
    reply(a.migrate_from_here(&name, &body(b)?).await?)
}

async fn agent_incoming(
    State(a): State<Arc<Agent>>,
    Path(name): Path<String>,
    b: Result<Json<IncomingRequest>, JsonRejection>,
) -> Reply {
    reply(a.prepare_incoming(&name, body(b)?).await?)
}

async fn agent_incoming_qmp(
    State(a): State<Arc<Agent>>,
    Path(name): Path<String>,
    b: Result<Json<QmpRequest>, JsonRejection>,
) -> Reply {
    reply(a.relay_qmp(&name, body(b)?).await?)
}

async fn agent_incoming_discard(State(a): State<Arc<Agent>>, Path(name): Path<String>) -> Reply {
    a.discard_incoming(&name).await?;
    reply(json!({ "discarded": name }))
}

async fn agent_progress(State(a): State<Arc<Agent>>, Path(name): Path<String>) -> Reply {
    reply(a.progress.lock().ok().and_then(|p| p.get(&name).cloned()))
}

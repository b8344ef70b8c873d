//! Membership administration: create the cluster, take members in, status.

use super::types::{CertificateRequest, Credentials, JoinRequest, Status};
use super::{ApiError, App};
use crate::client::FORWARDED;
use crate::state::{Command, Host, HostState, Request};
use crate::{Member, NodeId};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use openraft::{ChangeMembers, ServerState};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Where to send a request this member cannot serve, if anywhere: the
/// leader, unless the request was already forwarded once.
pub(crate) fn leader_for(
    headers: &HeaderMap,
    f: &ForwardToLeader<NodeId, Member>,
) -> Result<Member, ApiError> {
    if headers.contains_key(FORWARDED) {
        return Err(ApiError::unavailable(
            "forwarded to a member that is not the leader (leadership is changing)",
        ));
    }
    f.leader_node
        .clone()
        .ok_or_else(|| ApiError::unavailable("no leader is known yet"))
}

/// This member's Raft status.
pub(crate) fn status_of(app: &App) -> Status {
    let m = app.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let (mut v, mut l) = (BTreeMap::new(), BTreeMap::new());
    for (id, node) in membership.nodes() {
        if voters.contains(id) {
            v.insert(*id, node.clone());
        } else {
            l.insert(*id, node.clone());
        }
    }
    Status {
        id: app.id,
        state: format!("{:?}", m.state),
        term: m.current_term,
        leader: m.current_leader,
        last_log_index: m.last_log_index,
        last_applied: m.last_applied.map(|l| l.index),
        voters: v,
        learners: l,
    }
}

fn host_record(member: &Member, state: HostState) -> Host {
    let ip = member.addr.parse::<SocketAddr>().map(|a| a.ip());
    Host {
        name: member.name.clone(),
        networks: ip
            .into_iter()
            .map(|ip| ("cluster".to_string(), vec![ip]))
            .collect(),
        cpu_profile: serde_json::Value::Null,
        state,
    }
}

/// Commits a command on this member, which must be the leader.
async fn commit(
    app: &App,
    command: Command,
) -> Result<(), RaftError<NodeId, ClientWriteError<NodeId, Member>>> {
    app.raft
        .client_write(Request::now(command))
        .await
        .map(|_| ())
}

/// Makes this member the first of a new cluster: a one-voter membership,
/// then this host's record.
pub(crate) async fn create(app: &App) -> Result<Status, ApiError> {
    let members = BTreeMap::from([(app.id, app.member.clone())]);
    app.raft
        .initialize(members)
        .await
        .map_err(ApiError::bad_request)?;
    app.raft
        .wait(Some(Duration::from_secs(10)))
        .state(ServerState::Leader, "cluster init")
        .await
        .map_err(ApiError::unavailable)?;
    commit(
        app,
        Command::PutHost {
            host: host_record(&app.member, HostState::Up),
        },
    )
    .await
    .map_err(ApiError::unavailable)?;
    tracing::info!(
        "created the cluster with {} as member {}",
        app.member,
        app.id
    );
    Ok(status_of(app))
}

/// `POST /v1/cluster/init`: makes this member the first of a new cluster.
pub async fn init(State(app): State<Arc<App>>) -> Result<Json<Status>, ApiError> {
    create(&app).await.map(Json)
}

/// `POST /v1/cluster/join`: takes a member in — as a learner until it has
/// caught up, then as a voter.
pub async fn join(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(req): Json<JoinRequest>,
) -> Result<Json<Status>, ApiError> {
    req.member
        .addr
        .parse::<SocketAddr>()
        .map_err(|e| ApiError::bad_request(format!("address {:?}: {e}", req.member.addr)))?;
    if req.member.name.is_empty() {
        return Err(ApiError::bad_request("a member needs a name"));
    }
    let joining = Command::PutHost {
        host: host_record(&req.member, HostState::Joining),
    };
    match commit(&app, joining).await {
        Ok(()) => {}
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            let leader = leader_for(&headers, &f)?;
            return app
                .client
                .call(&leader, "/v1/cluster/join", Some(&req), true)
                .await
                .map(Json)
                .map_err(ApiError::upstream);
        }
        Err(e) => return Err(ApiError::unavailable(e)),
    }
    app.raft
        .add_learner(req.id, req.member.clone(), true)
        .await
        .map_err(ApiError::unavailable)?;
    app.raft
        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([req.id])), false)
        .await
        .map_err(ApiError::unavailable)?;
    commit(
        &app,
        Command::SetHostState {
            name: req.member.name.clone(),
            state: HostState::Up,
        },
    )
    .await
    .map_err(ApiError::unavailable)?;
    tracing::info!("member {} joined as {}", req.member, req.id);
    Ok(Json(status_of(&app)))
}

/// `GET /v1/cluster/status`: this member's view.
pub async fn status(State(app): State<Arc<App>>) -> Json<Status> {
    Json(status_of(&app))
}

/// `POST /v1/cluster/certificates`: issues a host certificate from the
/// cluster CA (only on the member that holds it).
pub async fn certificate(
    State(app): State<Arc<App>>,
    Json(req): Json<CertificateRequest>,
) -> Result<Json<Credentials>, ApiError> {
    let Some(ca_dir) = app.ca_dir.clone() else {
        return Err(ApiError {
            status: axum::http::StatusCode::CONFLICT,
            message: format!(
                "member {} does not hold the cluster CA: ask the member where the cluster was created",
                app.member
            ),
        });
    };
    let name_ok = req
        .name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && !req.name.contains("..");
    if !name_ok {
        return Err(ApiError::bad_request(format!(
            "host name {:?} must start with a letter or digit",
            req.name
        )));
    }
    let name = req.name.clone();
    let issued = tokio::task::spawn_blocking(move || -> Result<Credentials, ApiError> {
        let ca = ferry_pki::Ca::open_or_create(&ca_dir).map_err(ApiError::unavailable)?;
        let dir = ca_dir.join("issued").join(&req.name);
        ca.ensure_host(&req.name, &req.addresses, &dir)
            .map_err(ApiError::bad_request)?;
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).map_err(ApiError::unavailable);
        Ok(Credentials {
            ca_cert: read("ca-cert.pem")?,
            cert: read("server-cert.pem")?,
            key: read("server-key.pem")?,
        })
    })
    .await
    .map_err(ApiError::unavailable)??;
    tracing::info!("issued a certificate for host {name}");

    Ok(Json(issued))
}

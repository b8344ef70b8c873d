//! Membership administration: create the cluster, take members in, status.

use super::types::{
    CertificateRequest, Credentials, JoinRequest, LeaveRequest, Status, WriteResult,
};
use super::{ApiError, App};
use crate::client::FORWARDED;
use crate::state::{Command, Host, HostRole, HostState, Request, Response};
use crate::{Member, NodeId};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use openraft::{ChangeMembers, ServerState};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
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

/// `None` if this member leads; otherwise the leader to forward to.
fn forward_to(app: &App, headers: &HeaderMap) -> Result<Option<Member>, ApiError> {
    let metrics = app.raft.metrics().borrow().clone();
    if metrics.current_leader == Some(app.id) {
        return Ok(None);
    }
    let f = ForwardToLeader {
        leader_id: metrics.current_leader,
        leader_node: metrics
            .current_leader
            .and_then(|l| metrics.membership_config.membership().get_node(&l).cloned()),
    };
    leader_for(headers, &f).map(Some)
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

fn host_record(
    member: &Member,
    state: HostState,
    cert_der: Option<&[u8]>,
    networks: &BTreeMap<String, Vec<IpAddr>>,
    role: HostRole,
) -> Host {
    let networks = if networks.is_empty() {
        let ip = member.addr.parse::<SocketAddr>().map(|a| a.ip());
        ip.into_iter()
            .map(|ip| ("cluster".to_string(), vec![ip]))
            .collect()
    } else {
        networks.clone()
    };
    Host {
        name: member.name.clone(),
        networks,
        cpu_profile: serde_json::Value::Null,
        state,
        role,
        cert_sha256: cert_der.map(super::auth::sha256_hex),
        cert_der_hex: cert_der.map(crate::heartbeat::hex),
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
            host: host_record(
                &app.member,
                HostState::Up,
                app.cert_der.as_deref(),
                &app.networks,
                app.role,
            ),
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
    if let Some(leader) = forward_to(&app, &headers)? {
        return app
            .client
            .call(&leader, "/v1/cluster/join", Some(&req), true)
            .await
            .map(Json)
            .map_err(ApiError::upstream);
    }
    // An id or a name already in use by another member is refused: taking
    // it would replace that member.
    {
        let metrics = app.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        for (id, m) in membership.nodes() {
            let same_id = *id == req.id;
            let same_name = m.name == req.member.name;
            if same_id != same_name || (same_id && m.addr != req.member.addr) {
                return Err(ApiError {
                    status: axum::http::StatusCode::CONFLICT,
                    message: format!(
                        "member {id} is {m}: a joining member needs an id and a name of its own"
                    ),
                });
            }
        }
    }
    // The certificate the joiner serves with, which is also the one it
    // authenticates with: recorded so that it is revoked when it leaves.
    let cert = app
        .client
        .peer_certificate(&req.member)
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot reach the joining member: {e:#}")))?;
    let joining = Command::PutHost {
        host: host_record(
            &req.member,
            HostState::Joining,
            Some(&cert),
            &req.networks,
            req.role,
        ),
    };
    commit(&app, joining).await.map_err(ApiError::unavailable)?;
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

/// Commits `command` through whichever member leads, retrying for a while:
/// for steps that follow a membership change, after which the leader may
/// have changed (or this member stepped down).
async fn commit_anywhere(app: &App, command: Command) -> Result<Response, ApiError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let err = match app.raft.client_write(Request::now(command.clone())).await {
            Ok(r) => return Ok(r.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => match f.leader_node {
                Some(leader) => match app
                    .client
                    .call::<_, WriteResult>(&leader, "/v1/commands", Some(&command), true)
                    .await
                {
                    Ok(r) => return Ok(r.response),
                    Err(e) => e.to_string(),
                },
                None => "no leader yet".to_string(),
            },
            Err(e) => e.to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::unavailable(format!(
                "{command:?} did not commit: {err}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `POST /v1/cluster/leave`: removes a member (voter or learner), then its
/// host record, which revokes the certificate it joined with. Refused
/// while its host runs VMs.
pub async fn leave(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(req): Json<LeaveRequest>,
) -> Result<Json<Status>, ApiError> {
    if let Some(leader) = forward_to(&app, &headers)? {
        return app
            .client
            .call(&leader, "/v1/cluster/leave", Some(&req), true)
            .await
            .map(Json)
            .map_err(ApiError::upstream);
    }
    let metrics = app.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let Some(member) = membership.get_node(&req.id).cloned() else {
        return Err(ApiError {
            status: axum::http::StatusCode::NOT_FOUND,
            message: format!("no member {}", req.id),
        });
    };
    let voter = membership.voter_ids().any(|v| v == req.id);
    if voter && membership.voter_ids().count() == 1 {
        return Err(ApiError::bad_request("the last voter cannot leave"));
    }
    if let Some(vm) = app
        .state
        .read(|s| {
            s.vms
                .values()
                .find(|v| v.running && v.owner.as_deref() == Some(member.name.as_str()))
                .map(|v| v.name.clone())
        })
        .await
    {
        return Err(ApiError {
            status: axum::http::StatusCode::CONFLICT,
            message: format!(
                "host {} still runs VM {vm}: drain it (`ferry node drain`) or stop its VMs first",
                member.name
            ),
        });
    }
    let change = if voter {
        ChangeMembers::RemoveVoters(BTreeSet::from([req.id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([req.id]))
    };
    app.raft
        .change_membership(change, false)
        .await
        .map_err(ApiError::unavailable)?;
    // The certificate is revoked only now: had it been revoked first, a
    // leaving leader could no longer replicate its own removal.
    let removed = commit_anywhere(
        &app,
        Command::RemoveHost {
            name: member.name.clone(),
        },
    )
    .await?;
    if let Some(why) = removed.refused {
        tracing::warn!("member {} left but its host record stays: {why}", req.id);
    }
    tracing::info!("member {member} ({}) left the cluster", req.id);
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
        // A new key and certificate every time: one issued before may have
        // been revoked when its host left.
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(ApiError::unavailable)?;
        }
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

//! The Raft network: RPCs to other members over HTTPS with mutual TLS.
//!
//! Each RPC is a POST of a sealed body (`codec::RPC`) to
//! `/raft/v1/{append,vote,snapshot}`; the reply is a sealed
//! `Result<response, RaftError>`.

use crate::client::{read_capped, ClientError, Peers};
use crate::codec::{self, HEADER_LEN, RPC};
use crate::{Member, NodeId, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Makes connections to other members.
#[derive(Debug, Clone)]
pub struct Network {
    peers: Peers,
}

impl Network {
    /// A network that authenticates with `peers`' identity.
    pub fn new(peers: Peers) -> Self {
        Network { peers }
    }
}

/// Calls to one member.
#[derive(Debug)]
pub struct Connection {
    target: NodeId,
    member: Member,
    client: Result<(reqwest::Client, String), String>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Connection {
        Connection {
            target,
            member: node.clone(),
            client: self.peers.client_for(node).map_err(|e| e.to_string()),
        }
    }
}

type Rpc<E> = RPCError<NodeId, Member, RaftError<NodeId, E>>;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

impl Connection {
    async fn send<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, Rpc<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let (client, base) = self
            .client
            .as_ref()
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&Msg(e.clone()))))?;
        let body = codec::seal(RPC, req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let resp = client
            .post(format!("{base}{path}"))
            .timeout(option.hard_ttl())
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        let status = resp.status();
        let bytes = read_capped(&self.member, resp, HEADER_LEN + RPC.max_len as usize)
            .await
            .map_err(|e: ClientError| RPCError::Network(NetworkError::new(&e)))?;
        if !status.is_success() {
            let msg = Msg(format!(
                "{} answered {status}: {}",
                self.member,
                String::from_utf8_lossy(&bytes)
            ));
            return Err(RPCError::Network(NetworkError::new(&msg)));
        }
        let reply: Result<Resp, RaftError<NodeId, E>> =
            codec::open(RPC, &bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        reply.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.member.clone(),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, Rpc<openraft::error::Infallible>> {
        self.send("/raft/v1/append", &req, &option).await
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, Rpc<InstallSnapshotError>> {
        self.send("/raft/v1/snapshot", &req, &option).await
    }

    async fn vote(
        &mut self,
        req: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, Rpc<openraft::error::Infallible>> {
        self.send("/raft/v1/vote", &req, &option).await
    }
}

//! Heartbeats on every cluster network, and the host states they decide.
//!
//! Every member sends a small UDP datagram (a sealed `HEARTBEAT` record:
//! sender, network, sequence) every `delay` to every other host, on each
//! network both have, at the port of that host's cluster endpoint. Every
//! member notes when it last heard each host on each network. The leader
//! turns that into the replicated state, with an event for each change:
//!
//! - a network of a host is lost after `threshold` delays without a
//!   heartbeat on it, and restored when one arrives;
//! - a host that is `up` goes `down` when it is lost on every network, and
//!   comes back `up` when heard again (`paused` and `joining` hosts keep
//!   their state).
//!
//! The defaults follow Hyper-V's same-subnet settings: one second, ten
//! missed. A leader that has just been elected gives every host a full
//! threshold before judging it.

use crate::api::App;
use crate::codec::{self, HEARTBEAT};
use crate::state::{Command, HostState, Request};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How heartbeats run on this member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// Time between two heartbeats.
    pub delay: Duration,
    /// Heartbeats missed before a network (and, on all, a host) is lost.
    pub threshold: u32,
    /// This host's address on each cluster network, by network name.
    pub networks: BTreeMap<String, IpAddr>,
}

impl HeartbeatConfig {
    /// Hyper-V-like defaults (1 s, 10 missed) on the given networks.
    pub fn new(networks: BTreeMap<String, IpAddr>) -> Self {
        HeartbeatConfig {
            delay: Duration::from_secs(1),
            threshold: 10,
            networks,
        }
    }

    fn lost_after(&self) -> Duration {
        self.delay * self.threshold
    }
}

/// One heartbeat datagram.
#[derive(Debug, Serialize, Deserialize)]
struct Beat {
    from: String,
    network: String,
    seq: u64,
}

/// When this member last heard each (host, network).
type Heard = Arc<Mutex<HashMap<(String, String), Instant>>>;

/// The running heartbeat tasks; dropping them stops them.
#[derive(Debug)]
pub struct Heartbeats {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts sending, receiving and (while leader) judging heartbeats. Binds
/// one UDP socket per network, at this member's endpoint port.
pub async fn spawn(
    app: Arc<App>,
    config: HeartbeatConfig,
    port: u16,
) -> std::io::Result<Heartbeats> {
    let heard: Heard = Arc::default();
    let mut sockets = BTreeMap::new();
    let mut tasks = Vec::new();
    for (network, ip) in &config.networks {
        let socket = Arc::new(UdpSocket::bind((*ip, port)).await?);
        tasks.push(tokio::spawn(receive(
            socket.clone(),
            network.clone(),
            heard.clone(),
        )));
        sockets.insert(network.clone(), socket);
    }
    tasks.push(tokio::spawn(send(app.clone(), config.delay, sockets)));
    tasks.push(tokio::spawn(judge(app, config, heard)));
    Ok(Heartbeats { tasks })
}

async fn receive(socket: Arc<UdpSocket>, network: String, heard: Heard) {
    let mut buf = vec![0u8; codec::HEADER_LEN + HEARTBEAT.max_len as usize];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("heartbeat receive on {network}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match codec::open::<Beat>(HEARTBEAT, &buf[..n]) {
            Ok(beat) if beat.network == network => {
                if let Ok(mut h) = heard.lock() {
                    h.insert((beat.from, network.clone()), Instant::now());
                }
            }
            Ok(beat) => tracing::debug!(
                "heartbeat from {} for network {} arrived on {network}",
                beat.from,
                beat.network
            ),
            Err(e) => tracing::debug!("bad heartbeat from {peer}: {e}"),
        }
    }
}

/// Where to send heartbeats: each other host's addresses on each network,
/// at its endpoint port.
async fn targets(app: &App) -> Vec<(String, SocketAddr)> {
    let ports: BTreeMap<String, u16> = app
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .nodes()
        .filter_map(|(_, m)| Some((m.name.clone(), m.addr.parse::<SocketAddr>().ok()?.port())))
        .collect();
    app.state
        .read(|s| {
            let mut out = Vec::new();
            for host in s.hosts.values().filter(|h| h.name != app.member.name) {
                let Some(port) = ports.get(&host.name) else {
                    continue;
                };
                for (network, addrs) in &host.networks {
                    out.extend(
                        addrs
                            .iter()
                            .map(|ip| (network.clone(), SocketAddr::new(*ip, *port))),
                    );
                }
            }
            out
        })
        .await
}

async fn send(app: Arc<App>, delay: Duration, sockets: BTreeMap<String, Arc<UdpSocket>>) {
    let mut tick = tokio::time::interval(delay);
    let mut seq = 0u64;
    loop {
        tick.tick().await;
        seq += 1;
        for (network, addr) in targets(&app).await {
            let Some(socket) = sockets.get(&network) else {
                continue;
            };
            let beat = Beat {
                from: app.member.name.clone(),
                network: network.clone(),
                seq,
            };
            if let Ok(bytes) = codec::seal(HEARTBEAT, &beat) {
                if let Err(e) = socket.send_to(&bytes, addr).await {
                    tracing::debug!("heartbeat to {addr} on {network}: {e}");
                }
            }
        }
    }
}

/// While this member leads: records lost and restored networks and hosts.
async fn judge(app: Arc<App>, config: HeartbeatConfig, heard: Heard) {
    let mut tick = tokio::time::interval(config.delay);
    // Networks this leader has reported lost, and since when it has been
    // watching each host: a host is judged only a full threshold after
    // that (a new leader, a host that has just joined).
    let mut lost: BTreeSet<(String, String)> = BTreeSet::new();
    let mut watching: HashMap<String, Instant> = HashMap::new();
    loop {
        tick.tick().await;
        let leader = app.raft.metrics().borrow().current_leader == Some(app.id);
        if !leader {
            watching.clear();
            lost.clear();
            continue;
        }
        let now = Instant::now();
        let hosts = app.state.read(|s| s.hosts.clone()).await;
        let heard_now = heard.lock().map(|h| h.clone()).unwrap_or_default();
        let fresh = |host: &str, net: &str| {
            heard_now
                .get(&(host.to_string(), net.to_string()))
                .is_some_and(|t| now.duration_since(*t) < config.lost_after())
        };
        // A joining host may not beat yet.
        let judged = hosts
            .values()
            .filter(|h| h.name != app.member.name && h.state != HostState::Joining);
        for host in judged {
            let since = *watching.entry(host.name.clone()).or_insert(now);
            if now.duration_since(since) < config.lost_after() {
                continue;
            }
            let mut any = false;
            for network in host.networks.keys() {
                let key = (host.name.clone(), network.clone());
                let ok = fresh(&host.name, network);
                any |= ok;
                let message = match (ok, lost.contains(&key)) {
                    (false, false) => format!(
                        "host {}: network {network} lost ({} heartbeats missed)",
                        host.name, config.threshold
                    ),
                    (true, true) => format!("host {}: network {network} restored", host.name),
                    _ => continue,
                };
                if commit(&app, Command::Note { message }).await {
                    if ok {
                        lost.remove(&key);
                    } else {
                        lost.insert(key);
                    }
                }
            }
            let state = match (any, host.state) {
                (false, HostState::Up) => HostState::Down,
                (true, HostState::Down) => HostState::Up,
                _ => continue,
            };
            commit(
                &app,
                Command::SetHostState {
                    name: host.name.clone(),
                    state,
                },
            )
            .await;
        }
    }
}

async fn commit(app: &App, command: Command) -> bool {
    match app.raft.client_write(Request::now(command)).await {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!("heartbeat verdict not committed: {e}");
            false
        }
    }
}

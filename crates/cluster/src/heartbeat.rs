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
//!
//! A heartbeat is signed with the sender's TLS key (ECDSA P-256) and
//! checked against the certificate its host record holds (recorded at
//! create or join; gone when the host leaves). A heartbeat must also be
//! fresh (its send time within [`FRESH`] of the receiver's clock) and newer
//! than the last one taken from that host on that network, so a recorded
//! heartbeat replayed later does not make a dead host look alive.

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

/// How far a heartbeat's send time may be from the receiver's clock.
pub const FRESH: Duration = Duration::from_secs(30);

/// What a heartbeat says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    /// The sending host.
    pub from: String,
    /// The network it was sent on.
    pub network: String,
    /// Counts the sender's heartbeats.
    pub seq: u64,
    /// When it was sent, in milliseconds since the Unix epoch.
    pub sent_ms: u64,
}

/// A heartbeat datagram: the beat as JSON text and its signature over
/// exactly those bytes.
#[derive(Debug, Serialize, Deserialize)]
struct Signed {
    beat: String,
    /// ASN.1 DER ECDSA P-256/SHA-256 signature, hex.
    sig: String,
}

/// Why a heartbeat was not taken.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    /// This member's key cannot sign (not an ECDSA P-256 PKCS#8 key).
    #[error("this member's key cannot sign heartbeats: {0}")]
    Key(String),
    /// Signing failed.
    #[error("cannot sign a heartbeat")]
    Sign,
    /// The datagram is not a sealed, well-formed heartbeat.
    #[error("malformed heartbeat")]
    Malformed(#[source] codec::CodecError),
    /// The beat inside is not what a heartbeat holds.
    #[error("malformed heartbeat: {0}")]
    BadBeat(String),
    /// The sender has no certificate on record (not a member, or it left).
    #[error("heartbeat from {0}, which has no certificate on record")]
    Unknown(String),
    /// The signature does not match the sender's certificate.
    #[error("heartbeat from {0} with a bad signature")]
    BadSignature(String),
    /// Sent too long ago or too far ahead.
    #[error("stale heartbeat from {from} (sent {sent_ms}, now {now_ms})")]
    Stale {
        /// The sender.
        from: String,
        /// Its send time.
        sent_ms: u64,
        /// The receiver's time.
        now_ms: u64,
    },
    /// Not newer than one already taken.
    #[error("replayed heartbeat from {0}")]
    Replayed(String),
}

/// Lowercase hex of some bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Signs this member's heartbeats with its TLS key.
pub struct Signer {
    key: ring::signature::EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer")
    }
}

impl Signer {
    /// A signer with `identity`'s key.
    pub fn new(identity: &crate::tls::Identity) -> Result<Self, HeartbeatError> {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            identity.key_der(),
            &rng,
        )
        .map_err(|e| HeartbeatError::Key(e.to_string()))?;
        Ok(Signer { key, rng })
    }

    /// The datagram for `beat`.
    pub fn seal(&self, beat: &Beat) -> Result<Vec<u8>, HeartbeatError> {
        let text =
            serde_json::to_string(beat).map_err(|e| HeartbeatError::BadBeat(e.to_string()))?;
        let sig = self
            .key
            .sign(&self.rng, text.as_bytes())
            .map_err(|_| HeartbeatError::Sign)?;
        codec::seal(
            HEARTBEAT,
            &Signed {
                beat: text,
                sig: hex(sig.as_ref()),
            },
        )
        .map_err(HeartbeatError::Malformed)
    }
}

/// Opens a heartbeat datagram: the beat if it is well-formed, signed by the
/// key of the certificate `cert_of` gives for its sender, sent within
/// [`FRESH`] of `now_ms`, and newer than what `last_ms` gives for it.
pub fn open(
    datagram: &[u8],
    cert_of: impl FnOnce(&str) -> Option<Vec<u8>>,
    now_ms: u64,
    last_ms: impl FnOnce(&Beat) -> Option<u64>,
) -> Result<Beat, HeartbeatError> {
    let signed: Signed = codec::open(HEARTBEAT, datagram).map_err(HeartbeatError::Malformed)?;
    let beat: Beat =
        serde_json::from_str(&signed.beat).map_err(|e| HeartbeatError::BadBeat(e.to_string()))?;
    let der = cert_of(&beat.from).ok_or_else(|| HeartbeatError::Unknown(beat.from.clone()))?;
    let der = rustls::pki_types::CertificateDer::from(der);
    let cert = webpki::EndEntityCert::try_from(&der)
        .map_err(|_| HeartbeatError::Unknown(beat.from.clone()))?;
    let sig = unhex(&signed.sig).ok_or_else(|| HeartbeatError::BadSignature(beat.from.clone()))?;
    cert.verify_signature(
        webpki::ring::ECDSA_P256_SHA256,
        signed.beat.as_bytes(),
        &sig,
    )
    .map_err(|_| HeartbeatError::BadSignature(beat.from.clone()))?;
    if beat.sent_ms.abs_diff(now_ms) > FRESH.as_millis() as u64 {
        return Err(HeartbeatError::Stale {
            from: beat.from,
            sent_ms: beat.sent_ms,
            now_ms,
        });
    }
    if last_ms(&beat).is_some_and(|last| beat.sent_ms <= last) {
        return Err(HeartbeatError::Replayed(beat.from));
    }
    Ok(beat)
}

/// When this member last heard each (host, network), and the send time of
/// the last heartbeat taken from it.
type Heard = Arc<Mutex<HashMap<(String, String), (Instant, u64)>>>;

/// The running heartbeat tasks; dropping them stops them.
#[derive(Debug)]
pub struct Heartbeats {
    tasks: Vec<JoinHandle<()>>,
}

impl Heartbeats {
    /// Stops the tasks and waits until they are gone (their sockets closed).
    pub async fn stop(mut self) {
        for t in std::mem::take(&mut self.tasks) {
            t.abort();
            let _ = t.await;
        }
    }
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
    signer: Signer,
) -> std::io::Result<Heartbeats> {
    let heard: Heard = Arc::default();
    let mut sockets = BTreeMap::new();
    let mut tasks = Vec::new();
    for (network, ip) in &config.networks {
        let socket = Arc::new(UdpSocket::bind((*ip, port)).await?);
        tasks.push(tokio::spawn(receive(
            app.clone(),
            socket.clone(),
            network.clone(),
            heard.clone(),
        )));
        sockets.insert(network.clone(), socket);
    }
    tasks.push(tokio::spawn(send(
        app.clone(),
        config.delay,
        sockets,
        signer,
    )));
    tasks.push(tokio::spawn(judge(app, config, heard)));
    Ok(Heartbeats { tasks })
}

async fn receive(app: Arc<App>, socket: Arc<UdpSocket>, network: String, heard: Heard) {
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
        let last = heard.lock().map(|h| h.clone()).unwrap_or_default();
        // Only the sender's certificate is decoded, under the state's read
        // lock (a signature check, well under a millisecond).
        let opened = app
            .state
            .read(|s| {
                open(
                    &buf[..n],
                    |from| unhex(s.hosts.get(from)?.cert_der_hex.as_deref()?),
                    now_ms(),
                    |b| {
                        last.get(&(b.from.clone(), b.network.clone()))
                            .map(|(_, ms)| *ms)
                    },
                )
            })
            .await;
        match opened {
            Ok(beat) if beat.network == network => {
                if let Ok(mut h) = heard.lock() {
                    h.insert((beat.from, network.clone()), (Instant::now(), beat.sent_ms));
                }
            }
            Ok(beat) => tracing::debug!(
                "heartbeat from {} for network {} arrived on {network}",
                beat.from,
                beat.network
            ),
            Err(e) => tracing::debug!("heartbeat from {peer} refused: {e}"),
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

async fn send(
    app: Arc<App>,
    delay: Duration,
    sockets: BTreeMap<String, Arc<UdpSocket>>,
    signer: Signer,
) {
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
                sent_ms: now_ms(),
            };
            if let Ok(bytes) = signer.seal(&beat) {
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
                .is_some_and(|(t, _)| now.duration_since(*t) < config.lost_after())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::Identity;

    fn identity(ca: &ferry_pki::Ca, name: &str, dir: &std::path::Path) -> Identity {
        let dir = ca
            .ensure_host(name, &[], &dir.join(name))
            .expect("certificate");
        Identity::load(&dir).expect("identity")
    }

    #[test]
    fn only_fresh_signed_heartbeats_of_the_recorded_certificate_are_taken() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = ferry_pki::Ca::open_or_create(&tmp.path().join("ca")).expect("CA");
        let a = identity(&ca, "a", tmp.path());
        let b = identity(&ca, "b", tmp.path());
        let cert_a = a.cert_der().expect("cert").to_vec();
        let cert_b = b.cert_der().expect("cert").to_vec();
        let now = 1_000_000_000u64;
        let beat = Beat {
            from: "a".into(),
            network: "internal".into(),
            seq: 7,
            sent_ms: now,
        };
        let datagram = Signer::new(&a).expect("signer").seal(&beat).expect("seal");
        let open_with = |d: &[u8], cert: Option<Vec<u8>>, now_ms: u64, last: Option<u64>| {
            open(d, |_| cert, now_ms, |_| last)
        };

        assert_eq!(
            open_with(&datagram, Some(cert_a.clone()), now, None).expect("taken"),
            beat
        );
        let err = |r: Result<Beat, HeartbeatError>| r.expect_err("refused").to_string();
        assert!(err(open_with(&datagram, Some(cert_b), now, None)).contains("bad signature"));
        assert!(err(open_with(&datagram, None, now, None)).contains("no certificate"));
        assert!(err(open_with(
            &datagram,
            Some(cert_a.clone()),
            now + 31_000,
            None
        ))
        .contains("stale"));
        assert!(
            err(open_with(&datagram, Some(cert_a.clone()), now, Some(now))).contains("replayed")
        );

        // Signed by b but claiming to be a.
        let forged = Signer::new(&b).expect("signer").seal(&beat).expect("seal");
        assert!(err(open_with(&forged, Some(cert_a.clone()), now, None)).contains("bad signature"));
        // a's signature over a different beat.
        let mut signed: Signed = codec::open(HEARTBEAT, &datagram).expect("open");
        signed.beat = signed.beat.replace("internal", "external");
        let tampered = codec::seal(HEARTBEAT, &signed).expect("seal");
        assert!(
            err(open_with(&tampered, Some(cert_a.clone()), now, None)).contains("bad signature")
        );
        // Damaged in transit.
        let mut damaged = datagram.clone();
        let last = damaged.len() - 3;
        damaged[last] ^= 1;
        assert!(err(open_with(&damaged, Some(cert_a), now, None)).contains("malformed"));
    }
}

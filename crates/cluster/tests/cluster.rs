//! Three members on 127.0.0.1 with their own directories and certificates:
//! create, join (one join through a follower, after the log was purged
//! into a snapshot), commit and read through followers, lose the leader,
//! restart everyone from disk, and refuse a stranger's certificate.

use ferry_cluster::api::auth::token_sha256;
use ferry_cluster::api::types::JoinRequest;
use ferry_cluster::client::{ApiClient, ClientError, Peers};
use ferry_cluster::heartbeat::HeartbeatConfig;
use ferry_cluster::node::{Node, NodeConfig};
use ferry_cluster::state::{ClusterState, Command, HostRole, HostState, VmDef};
use ferry_cluster::tls::Identity;
use ferry_cluster::{Member, NodeId};
use ferry_pki::Ca;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::TcpListener;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

fn raft_timings() -> openraft::Config {
    openraft::Config {
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        // Snapshot and purge often, so a late joiner is sent a snapshot.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(10),
        max_in_snapshot_log_to_keep: 0,
        ..NodeConfig::default_raft()
    }
}

struct Lab {
    root: PathBuf,
    addrs: Vec<SocketAddr>,
}

impl Lab {
    fn config(&self, id: NodeId) -> NodeConfig {
        NodeConfig {
            id,
            name: format!("node{id}"),
            data_dir: self.root.join(format!("data{id}")),
            tls_dir: self.root.join(format!("tls{id}")),
            ca_dir: None,
            raft: raft_timings(),
            role: HostRole::Hypervisor,
            heartbeat: Some(HeartbeatConfig {
                delay: Duration::from_millis(100),
                threshold: 10,
                networks: BTreeMap::from([("cluster".to_string(), LOCALHOST)]),
            }),
        }
    }

    async fn start(&self, id: NodeId) -> Node {
        let addr = self.addrs[id as usize - 1];
        // The port was just released by a stopped member: retry briefly.
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    tracing::debug!("bind {addr}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot bind {addr} again: {e}"),
            }
        };
        Node::start(self.config(id), listener)
            .await
            .expect("start member")
    }
}

fn member(lab: &Lab, id: NodeId) -> Member {
    Member {
        name: format!("node{id}"),
        addr: lab.addrs[id as usize - 1].to_string(),
    }
}

/// Waits until one of `members` reports a leader other than `not`.
async fn wait_leader(client: &ApiClient, members: &[Member], not: Option<NodeId>) -> NodeId {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        for m in members {
            if let Ok(s) = client.status(m).await {
                if let Some(l) = s.leader.filter(|l| Some(*l) != not) {
                    if s.state == "Leader" || s.voters.contains_key(&l) {
                        return l;
                    }
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leader elected in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes through `via`, retrying while leadership settles.
async fn write(client: &ApiClient, via: &[Member], command: Command) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        for m in via {
            match client.write(m, &command).await {
                Ok(r) => {
                    assert_eq!(r.response.refused, None, "{command:?} refused");
                    return r.log_index;
                }
                Err(e) => tracing::info!("write through {m}: {e:#}"),
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "write never committed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn read(client: &ApiClient, via: &[Member]) -> ClusterState {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        for m in via {
            match client.state(m).await {
                Ok(s) => return s,
                Err(e) => tracing::info!("read through {m}: {e:#}"),
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no linearizable read"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads until `pred` holds.
async fn wait_state(
    client: &ApiClient,
    via: &[Member],
    what: &str,
    pred: impl Fn(&ClusterState) -> bool,
) -> ClusterState {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = read(client, via).await;
        if pred(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {what}: {:?}",
            s.hosts
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn joining(id: NodeId, member: &Member) -> JoinRequest {
    JoinRequest {
        id,
        member: member.clone(),
        networks: BTreeMap::new(),
        role: HostRole::Hypervisor,
    }
}

fn issue(ca: &Ca, name: &str, dir: &Path) {
    ca.ensure_host(name, &[LOCALHOST], dir)
        .expect("issue certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_survive_leader_loss_and_full_restart() {
    init_tracing();
    tokio::time::timeout(Duration::from_secs(180), scenario())
        .await
        .expect("scenario finished in time");
}

async fn scenario() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = Ca::open_or_create(&tmp.path().join("ca")).expect("CA");
    let mut addrs = Vec::new();
    let mut listeners = Vec::new();
    for id in 1..=3u64 {
        issue(
            &ca,
            &format!("node{id}"),
            &tmp.path().join(format!("tls{id}")),
        );
        let l = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
        addrs.push(l.local_addr().expect("addr"));
        listeners.push(l);
    }
    let lab = Lab {
        root: tmp.path().to_path_buf(),
        addrs,
    };
    let mut nodes = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        nodes.push(Some(
            Node::start(lab.config(i as u64 + 1), l)
                .await
                .expect("start"),
        ));
    }
    let all: Vec<Member> = (1..=3).map(|id| member(&lab, id)).collect();

    // Create on node 1 (as node 1 would, with its certificate) and set the
    // API token; from then on the test is the CLI: no certificate, a token.
    let node1 = ApiClient::new(&Identity::load(&tmp.path().join("tls1")).expect("identity"))
        .expect("client");
    let status = node1.init(&all[0]).await.expect("init");
    assert_eq!(status.leader, Some(1));
    write(
        &node1,
        &all[..1],
        Command::SetApiToken {
            sha256: token_sha256("token"),
        },
    )
    .await;
    let client = ApiClient::from_peers(
        Peers::anonymous(&tmp.path().join("ca/ca-cert.pem")).expect("CLI TLS"),
    )
    .with_token("token");
    drop(node1);
    client
        .join(&all[0], &joining(2, &all[1]))
        .await
        .expect("join node2");
    // Enough entries that the leader snapshots and purges its log...
    for i in 0..15 {
        write(
            &client,
            &all[..1],
            Command::Note {
                message: format!("note {i}"),
            },
        )
        .await;
    }
    // ...so node 3, joining through a follower, is sent a snapshot.
    // An id that is taken is refused.
    let err = client
        .join(&all[0], &joining(2, &all[2]))
        .await
        .expect_err("id 2 is node2's");
    assert!(
        matches!(err, ClientError::Api { status: 409, .. }),
        "{err:#}"
    );
    let status = client
        .join(&all[1], &joining(3, &all[2]))
        .await
        .expect("join node3 via node2");
    assert_eq!(status.voters.len(), 3, "{status:?}");

    // A write through a follower, read back through another follower.
    let vm = VmDef {
        name: "web".into(),
        spec: serde_json::json!({"memory_mib": 256, "cpus": 1}),
        owner: Some("node1".into()),
        ..VmDef::default()
    };
    write(&client, &all[2..3], Command::PutVm { vm: vm.clone() }).await;
    let state = read(&client, &all[1..2]).await;
    assert_eq!(state.vms.get("web"), Some(&vm));
    assert_eq!(client.vm(&all[2], "web").await.expect("vm"), vm);
    let err = client.vm(&all[2], "nope").await.expect_err("no such VM");
    assert!(
        matches!(err, ClientError::Api { status: 404, .. }),
        "{err:#}"
    );
    let last = state.events.back().expect("events").seq;
    let events = client.events(&all[1], last).await.expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].message, "VM web defined");
    assert_eq!(state.hosts.len(), 3);
    wait_state(&client, &all, "every host up after the joins", |s| {
        s.hosts.values().all(|h| h.state == HostState::Up)
    })
    .await;
    // Node 3 holds the snapshot's state too (its local copy, eventually).
    let n3 = nodes[2].as_ref().expect("node3");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while n3
        .state()
        .read(|s| s.vms.contains_key("web"))
        .await
        .then_some(())
        .is_none()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node3 never applied the VM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        n3.state()
            .read(|s| s.events.iter().any(|e| e.message == "note 0"))
            .await
    );

    // Lose the leader: a new one is elected and writes still commit.
    let old = wait_leader(&client, &all, None).await;
    nodes[old as usize - 1]
        .take()
        .expect("leader running")
        .shutdown()
        .await;
    let survivors: Vec<Member> = all
        .iter()
        .filter(|m| m.name != format!("node{old}"))
        .cloned()
        .collect();
    let new = wait_leader(&client, &survivors, Some(old)).await;
    assert_ne!(new, old);
    write(
        &client,
        &survivors,
        Command::SetVmOwner {
            name: "web".into(),
            owner: Some("node2".into()),
        },
    )
    .await;
    assert_eq!(
        read(&client, &survivors).await.vms["web"].owner.as_deref(),
        Some("node2")
    );
    // Its heartbeats stopped: the new leader marks its host down.
    let gone = format!("node{old}");
    let state = wait_state(&client, &survivors, "the stopped host down", |s| {
        s.hosts[&gone].state == HostState::Down
    })
    .await;
    let lost = format!("host {gone}: network cluster lost (10 heartbeats missed)");
    assert!(
        state.events.iter().any(|e| e.message == lost),
        "{:?}",
        state.events
    );

    // Stop everyone; start everyone from their directories.
    for n in nodes.iter_mut() {
        if let Some(n) = n.take() {
            n.shutdown().await;
        }
    }
    for id in 1..=3 {
        nodes[id as usize - 1] = Some(lab.start(id).await);
    }
    wait_leader(&client, &all, None).await;
    // Heard again: every host is up.
    wait_state(&client, &all, "every host up", |s| {
        s.hosts.values().all(|h| h.state == HostState::Up)
    })
    .await;
    let state = read(&client, &all).await;
    let back = format!("host {gone}: down -> up");
    assert!(
        state.events.iter().any(|e| e.message == back),
        "{:?}",
        state.events
    );
    assert_eq!(state.vms["web"].owner.as_deref(), Some("node2"));
    assert_eq!(state.vms["web"].spec, vm.spec);
    assert_eq!(state.hosts.len(), 3);
    assert!(state
        .events
        .iter()
        .any(|e| e.message.contains("VM web owner node1 -> node2")));
    let after = write(
        &client,
        &all,
        Command::Note {
            message: "after restart".into(),
        },
    )
    .await;
    assert!(after > 20, "the log goes on where it was: index {after}");

    // The leader leaves (its host owns no VM once the VM moves): two
    // members go on, and its certificate opens nothing any more.
    let leader = wait_leader(&client, &all, None).await;
    let leaving = member(&lab, leader);
    let stay: Vec<Member> = all.iter().filter(|m| **m != leaving).cloned().collect();
    write(
        &client,
        &all,
        Command::SetVmOwner {
            name: "web".into(),
            owner: Some(stay[0].name.clone()),
        },
    )
    .await;
    let status = client.leave(&stay[0], leader).await.expect("leave");
    assert!(!status.voters.contains_key(&leader), "{status:?}");
    let new = wait_leader(&client, &stay, Some(leader)).await;
    assert_ne!(new, leader);
    write(
        &client,
        &stay,
        Command::Note {
            message: "after leave".into(),
        },
    )
    .await;
    let state = read(&client, &stay).await;
    assert!(
        !state.hosts.contains_key(&leaving.name),
        "{:?}",
        state.hosts
    );
    assert_eq!(state.revoked_certs.len(), 1);
    let left = ApiClient::new(
        &Identity::load(&tmp.path().join(format!("tls{leader}"))).expect("identity"),
    )
    .expect("client");
    let err = left.status(&stay[0]).await.expect_err("revoked");
    assert!(
        matches!(err, ClientError::Api { status: 403, .. }),
        "{err:#}"
    );

    for n in nodes.iter_mut() {
        if let Some(n) = n.take() {
            n.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_are_refused_and_the_cli_needs_the_token() {
    init_tracing();
    tokio::time::timeout(Duration::from_secs(60), access_control())
        .await
        .expect("finished in time");
}

async fn access_control() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca_dir = tmp.path().join("ca");
    let ca = Ca::open_or_create(&ca_dir).expect("CA");
    let other = Ca::open_or_create(&tmp.path().join("other-ca")).expect("other CA");
    issue(&ca, "node1", &tmp.path().join("tls1"));
    issue(&other, "node1", &tmp.path().join("stranger"));
    let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let m = Member {
        name: "node1".into(),
        addr: addr.clone(),
    };
    let config = NodeConfig {
        id: 1,
        name: "node1".into(),
        data_dir: tmp.path().join("data1"),
        tls_dir: tmp.path().join("tls1"),
        ca_dir: Some(ca_dir.clone()),
        raft: raft_timings(),
        heartbeat: None,
        role: HostRole::Hypervisor,
    };
    let node = Node::start(config, listener).await.expect("start");
    let member_client =
        ApiClient::new(&Identity::load(&tmp.path().join("tls1")).expect("identity"))
            .expect("client");
    member_client
        .init(&m)
        .await
        .expect("a member certificate is served");

    // A stranger (same name, another CA) is refused at the TLS handshake.
    let stranger = ApiClient::new(&Identity::load(&tmp.path().join("stranger")).expect("identity"))
        .expect("client");
    let err = stranger.status(&m).await.expect_err("stranger refused");
    assert!(
        matches!(err, ClientError::Http { .. }),
        "refused at the TLS layer: {err:#}"
    );
    stranger
        .write(
            &m,
            &Command::Note {
                message: "intrusion".into(),
            },
        )
        .await
        .expect_err("stranger cannot write");

    // A whole member with the stranger's credentials cannot be taken in:
    // the leader does not trust its certificate.
    let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
    issue(&other, "node9", &tmp.path().join("stranger9"));
    let strange = Member {
        name: "node9".into(),
        addr: listener.local_addr().expect("addr").to_string(),
    };
    let stranger_node = Node::start(
        NodeConfig {
            id: 9,
            name: "node9".into(),
            data_dir: tmp.path().join("data9"),
            tls_dir: tmp.path().join("stranger9"),
            ca_dir: None,
            raft: raft_timings(),
            heartbeat: None,
            role: HostRole::Hypervisor,
        },
        listener,
    )
    .await
    .expect("start the stranger");
    let err = member_client
        .join(&m, &joining(9, &strange))
        .await
        .expect_err("a stranger cannot join");
    assert!(
        matches!(&err, ClientError::Api { status: 400, message, .. }
            if message.contains("cannot reach the joining member")),
        "{err:#}"
    );
    assert!(
        member_client.status(&m).await.expect("status").voters.len() == 1,
        "the membership is unchanged"
    );
    stranger_node.shutdown().await;

    // The CLI has no certificate: it needs the token, which the cluster
    // keeps only as a hash.
    let by_addr = Member {
        name: String::new(),
        addr: addr.clone(),
    };
    let cli = ApiClient::from_peers(Peers::anonymous(&ca_dir.join("ca-cert.pem")).expect("peers"));
    let err = cli.status(&by_addr).await.expect_err("no token");
    assert!(
        matches!(err, ClientError::Api { status: 401, .. }),
        "{err:#}"
    );
    write(
        &member_client,
        std::slice::from_ref(&m),
        Command::SetApiToken {
            sha256: token_sha256("s3cret"),
        },
    )
    .await;
    let err = cli
        .clone()
        .with_token("guess")
        .status(&by_addr)
        .await
        .expect_err("wrong token");
    assert!(
        matches!(err, ClientError::Api { status: 401, .. }),
        "{err:#}"
    );
    let cli = cli.with_token("s3cret");
    assert_eq!(cli.status(&by_addr).await.expect("status").leader, Some(1));
    let state = cli.state(&by_addr).await.expect("read");
    assert!(!state.events.iter().any(|e| e.message == "intrusion"));
    assert!(state.api_token_sha256.is_some());

    // The token opens the API, never the Raft RPCs.
    let (http, base) = Peers::anonymous(&ca_dir.join("ca-cert.pem"))
        .expect("peers")
        .client_for(&by_addr)
        .expect("client");
    let resp = http
        .post(format!("{base}/raft/v1/vote"))
        .bearer_auth("s3cret")
        .body(Vec::new())
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 403);

    // With the token, a new host gets a certificate from the cluster CA,
    // and with it is a member.
    let creds = cli
        .certificate(&by_addr, "node2", &[LOCALHOST])
        .await
        .expect("certificate");
    let dir2 = tmp.path().join("tls2");
    std::fs::create_dir_all(&dir2).expect("mkdir");
    std::fs::write(dir2.join("ca-cert.pem"), &creds.ca_cert).expect("write");
    std::fs::write(dir2.join("server-cert.pem"), &creds.cert).expect("write");
    std::fs::write(dir2.join("server-key.pem"), &creds.key).expect("write");
    let node2_client = ApiClient::new(&Identity::load(&dir2).expect("identity")).expect("client");
    node2_client
        .status(&m)
        .await
        .expect("the new certificate is a member's");
    let err = cli
        .certificate(&by_addr, "..", &[])
        .await
        .expect_err("bad name");
    assert!(
        matches!(err, ClientError::Api { status: 400, .. }),
        "{err:#}"
    );
    node.shutdown().await;
}

//! `ferry cluster ...`: make a cluster, join one, see its state.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use ferry_cluster::api::types::Status;
use ferry_cluster::client::{ApiClient, Peers};
use ferry_cluster::config::MemberConfig;
use ferry_cluster::setup::{self, Joined};
use ferry_cluster::state::ClusterState;
use ferry_cluster::Member;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Cluster verbs.
#[derive(Subcommand)]
pub enum ClusterCmd {
    /// Make a new cluster with this host as its first member: the cluster
    /// CA, this host's certificate, the CLI's API token (printed, and kept
    /// in DATA_DIR/api-token). Run before the daemon starts.
    Create {
        /// Member configuration (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Join this host to a cluster: first fetches its certificate (then
    /// start `ferry daemon`), then, run again, asks the cluster to take it in.
    Join {
        /// Member configuration (TOML).
        #[arg(long)]
        config: PathBuf,
        /// A member to ask (the one where the cluster was created, for the
        /// certificate) [default: the first of the config's peers].
        #[arg(long)]
        via: Option<SocketAddr>,
        /// The cluster's API token [default: $FERRY_TOKEN].
        #[arg(long)]
        token: Option<String>,
        /// A copy of the cluster CA's certificate (ca-cert.pem from the
        /// first host), to trust the member asked.
        #[arg(long)]
        ca_cert: Option<PathBuf>,
    },
    /// Remove a member from the cluster (this host's, by default); its
    /// certificate is revoked. Refused while its host runs VMs.
    Leave {
        /// Member configuration (TOML) of a member host.
        #[arg(long)]
        config: PathBuf,
        /// The Raft id of the member to remove [default: this host's].
        #[arg(long)]
        member: Option<u64>,
    },
    /// Members, leader, hosts and VMs, read linearizably.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Replace the CLI's API token with a new one (printed); the old one
    /// stops working.
    RotateToken {
        #[command(flatten)]
        target: Target,
    },
    /// The cluster's events, oldest first.
    Events {
        #[command(flatten)]
        target: Target,
        /// Only events from this sequence number on.
        #[arg(long, default_value_t = 0)]
        since: u64,
    },
    /// VMs the cluster runs: create, start, stop, restart, migrate, list,
    /// status. (`ferry vm` acts on this host alone, without the cluster.)
    #[command(subcommand)]
    Vm(super::roles::RoleCmd),
    /// Validate hosts for a cluster, before or after it is made: the
    /// accelerator on each, CPUs and the compatible baseline, every pair of
    /// hosts on every network (latency, MTU), clocks, versions. Pass, warn or
    /// fail per test with the reason; exits non-zero on any failure.
    Validate {
        /// Hosts (names in the hosts file) [default: every host in it].
        hosts: Vec<String>,
        /// Hosts file [default: $FERRY_HOSTS or /etc/ferry/hosts.toml].
        #[arg(long)]
        hosts_file: Option<PathBuf>,
        /// Also write the report as an HTML page here.
        #[arg(long)]
        html: Option<PathBuf>,
        /// A shared LUN every host must see as the same disk, on which
        /// persistent reservations are tried between two hosts (never on a
        /// LUN that holds keys: that one is reported in use, not touched);
        /// repeatable. iscsi://PORTAL/TARGET-IQN/LUN
        #[arg(long = "lun")]
        luns: Vec<String>,
        /// For LUNs behind CHAP: the secrets file each host reads (the same
        /// path on every host; the format of a VM disk's `secrets`)
        /// [default: /etc/ferry/iscsi-secrets.toml where it exists].
        #[arg(long)]
        lun_secrets: Option<PathBuf>,
    },
}

/// Which member to ask, and how to authenticate.
#[derive(Args)]
pub(super) struct Target {
    /// On a member host: its configuration (the CLI uses its identity).
    #[arg(long, conflicts_with_all = ["server", "ca_cert"])]
    config: Option<PathBuf>,
    /// Otherwise: a member's address...
    #[arg(long, requires = "ca_cert")]
    server: Option<SocketAddr>,
    /// ...the cluster CA's certificate...
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// ...and the API token [default: $FERRY_TOKEN].
    #[arg(long)]
    token: Option<String>,
}

impl Target {
    pub(super) fn client(self) -> anyhow::Result<(ApiClient, Member)> {
        Ok(match (self.config, self.server, self.ca_cert) {
            (Some(c), _, _) => {
                let c = MemberConfig::load(&c)?;
                (setup::member_client(&c)?, by_addr(c.listen))
            }
            (None, Some(s), Some(ca)) => (cli_client(&ca, token(self.token)?)?, by_addr(s)),
            _ => bail!("give --config (on a member) or --server, --ca-cert and a token"),
        })
    }
}

fn token(arg: Option<String>) -> anyhow::Result<String> {
    match arg.or_else(|| std::env::var("FERRY_TOKEN").ok()) {
        Some(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => bail!("the cluster's API token is needed: --token or $FERRY_TOKEN"),
    }
}

fn by_addr(addr: impl ToString) -> Member {
    Member {
        name: String::new(),
        addr: addr.to_string(),
    }
}

/// Runs a cluster verb.
pub async fn run(cmd: ClusterCmd, json: bool) -> anyhow::Result<ExitCode> {
    match cmd {
        ClusterCmd::Vm(cmd) => super::roles::run(cmd, json).await,
        ClusterCmd::Validate {
            hosts,
            hosts_file,
            html,
            luns,
            lun_secrets,
        } => validate(hosts, hosts_file, html, &luns, lun_secrets.as_deref(), json),
        ClusterCmd::Create { config } => {
            let config = MemberConfig::load(&config)?;
            let made = setup::create(&config).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"token": made.token, "ca_cert": made.ca_cert})
                );
            } else {
                println!(
                    "created the cluster with {} as member {}",
                    config.name, config.id
                );
                println!("API token  {}", made.token);
                println!(
                    "CA cert    {} (joining hosts need a copy)",
                    made.ca_cert.display()
                );
                println!("next: ferry daemon --config <this config>");
            }
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::Join {
            config,
            via,
            token: t,
            ca_cert,
        } => {
            let path = config;
            let config = MemberConfig::load(&path)?;
            let via = via
                .or_else(|| config.peers.first().copied())
                .context("--via or peers in the configuration is needed")?;
            let ca_cert = ca_cert.unwrap_or_else(|| config.tls_dir().join("ca-cert.pem"));
            match setup::join(&config, via, &token(t)?, &ca_cert).await? {
                Joined::CertificateInstalled(dir) => {
                    if json {
                        println!("{}", serde_json::json!({"joined": false, "tls_dir": dir}));
                    } else {
                        println!("certificate installed in {}", dir.display());
                        println!(
                            "next: ferry daemon --config {p}, then ferry cluster join --config {p} again",
                            p = path.display()
                        );
                    }
                }
                Joined::Member(status) => {
                    if json {
                        println!("{}", serde_json::json!({"joined": true, "status": status}));
                    } else {
                        println!("{} joined as member {}", config.name, config.id);
                        print_status(&status, None);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::Leave { config, member } => {
            let config = MemberConfig::load(&config)?;
            let id = member.unwrap_or(config.id);
            let status = setup::member_client(&config)?
                .leave(&by_addr(config.listen), id)
                .await?;
            if json {
                println!("{}", serde_json::json!({"left": id, "status": status}));
            } else {
                println!("member {id} left the cluster");
                print_status(&status, None);
                if id == config.id {
                    println!(
                        "this host is no longer a member: stop its daemon; to join again, remove {} first",
                        config.data_dir.display()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::RotateToken { target } => {
            let config = match &target.config {
                Some(c) => Some(MemberConfig::load(c)?),
                None => None,
            };
            let (client, via) = target.client()?;
            let token = setup::rotate_token(&client, &via).await?;
            let saved = match &config {
                Some(c) => setup::save_token(c, &token)?,
                None => false,
            };
            if json {
                println!("{}", serde_json::json!({ "token": token }));
            } else {
                println!("API token  {token}");
                if saved {
                    if let Some(c) = &config {
                        println!("saved in   {}", c.token_path().display());
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::Events { target, since } => {
            let (client, target) = target.client()?;
            let events = client.events(&target, since).await?;
            if json {
                println!("{}", serde_json::json!({ "events": events }));
            } else {
                for e in &events {
                    println!("{:>6}  {}  {}", e.seq, e.at_ms, e.message);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::Status { target } => {
            let (client, target) = target.client()?;
            let status = client.status(&target).await?;
            let state = client.state(&target).await?;
            if json {
                println!("{}", serde_json::json!({"status": status, "state": state}));
            } else {
                print_status(&status, Some(&state));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn cli_client(ca_cert: &Path, token: String) -> anyhow::Result<ApiClient> {
    Ok(ApiClient::from_peers(Peers::anonymous(ca_cert)?).with_token(token))
}

fn print_status(status: &Status, state: Option<&ClusterState>) {
    let leader = status
        .leader
        .map(|l| l.to_string())
        .unwrap_or_else(|| "none".into());
    println!(
        "member {} is {} (term {}, leader {leader})",
        status.id, status.state, status.term
    );
    for (id, m) in &status.voters {
        println!("  voter   {id:>3}  {:<16} {}", m.name, m.addr);
    }
    for (id, m) in &status.learners {
        println!("  learner {id:>3}  {:<16} {}", m.name, m.addr);
    }
    if let Some(state) = state {
        println!("hosts");
        for h in state.hosts.values() {
            println!("  {:<16} {:<8} {}", h.name, h.state, h.role);
        }
        println!("VMs");
        for v in state.vms.values() {
            println!(
                "  {:<16} owner {:<16} {}",
                v.name,
                v.owner.as_deref().unwrap_or("none"),
                if v.running { "running" } else { "stopped" }
            );
        }
    }
}

fn validate(
    names: Vec<String>,
    hosts_file: Option<PathBuf>,
    html: Option<PathBuf>,
    luns: &[String],
    lun_secrets: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let path = super::migrate::hosts_path(hosts_file);
    let file = ferry_migrate::HostsFile::load(&path)?;
    let names = if names.is_empty() {
        file.hosts.keys().cloned().collect()
    } else {
        names
    };
    let targets = names
        .iter()
        .map(|n| {
            Ok(ferry_validate::Target {
                name: n.clone(),
                host: file.get(n, &path)?.clone(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let exe = std::env::current_exe().context("cannot find the ferry binary")?;
    let report = ferry_validate::validate(&targets, &exe, luns, lun_secrets);
    if let Some(page) = &html {
        std::fs::write(page, report.html())
            .with_context(|| format!("writing {}", page.display()))?;
    }
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.text());
        if let Some(page) = &html {
            println!("HTML report: {}", page.display());
        }
    }
    Ok(if report.verdict() == ferry_validate::Outcome::Fail {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

//! `ferry lab demo`: the seed's walkthrough, end to end, on the lab.
//!
//! Every step runs the `ferry` command a user would run, in the namespace
//! of the machine it runs on; nothing here talks to QEMU or the block
//! service directly. The first step that fails stops the demo.

use crate::report::{DemoReport, MigrationMark, ProbeSummary, Step, StepStatus};
use crate::seed::{SeedLab, CLIENT_ADDR, VM_ADDR, VM_BRIDGE};
use ferry_workloads::{counter, disktest};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Name of the demo's VM.
pub const VM: &str = "demo-vm";
/// The SAN's target and portal (dc, external network).
const SAN_TARGET: &str = "iqn.2026-11.dev.ferry:cluster-disks";
const SAN_PORTAL: &str = "10.30.0.1:3260";
/// Blocks of the demo VM's data disk the integrity workload writes.
const DISK_BLOCKS: u64 = 2048;

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The `ferry` binary every step runs.
    pub ferry: PathBuf,
    /// Directory with the test guest's kernel and initramfs.
    pub guest_dir: PathBuf,
    /// A quicker variant (smaller VM, shorter pauses) for CI.
    pub short: bool,
}

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
#[error("step {step:?} failed: {reason}")]
pub struct DemoError {
    /// The step.
    pub step: String,
    /// Why.
    pub reason: String,
    /// The report so far (steps done, the failed one last).
    pub report: Box<DemoReport>,
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// Runs the demo on `lab` (made if needed), calling `say` with each line of
/// narration. Returns the report, also written to the lab's `report/`.
pub fn run(
    lab: &SeedLab,
    opts: &DemoOptions,
    mut say: impl FnMut(&str),
) -> Result<DemoReport, DemoError> {
    let mut d = Demo {
        lab,
        opts,
        report: DemoReport {
            lab: lab.name.clone(),
            started_unix_ms: unix_ms(),
            ..DemoReport::default()
        },
        probe: None,
        history: String::new(),
    };
    let result = d.walk(&mut say);
    if let Some(mut child) = d.probe.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
    // Leave no VM behind, whatever happened.
    for server in crate::seed::SERVERS {
        let _ = d.ferry(server).args(["vm", "stop", VM, "--force"]).output();
    }
    d.report.finished_unix_ms = unix_ms();
    let written = crate::report::write(&lab.dir().join("report"), &d.report);
    match (result, written) {
        (Ok(()), Ok(dir)) => {
            d.report.report_dir = dir.display().to_string();
            Ok(d.report)
        }
        (Ok(()), Err(e)) => Err(DemoError {
            step: "write the report".into(),
            reason: e.to_string(),
            report: Box::new(d.report),
        }),
        (Err((step, reason)), _) => Err(DemoError {
            step,
            reason,
            report: Box::new(d.report),
        }),
    }
}

type StepResult = Result<String, String>;

struct Demo<'a> {
    lab: &'a SeedLab,
    opts: &'a DemoOptions,
    report: DemoReport,
    probe: Option<Child>,
    /// The consoles of hosts the VM has left, in order: a host's log starts
    /// afresh when the VM comes back to it.
    history: String,
}

impl Demo<'_> {
    /// `ferry` on a machine of the lab, with that host's environment.
    fn ferry(&self, machine: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.lab.netns(machine)])
            .arg(&self.opts.ferry)
            .env("FERRY_HOSTS", self.lab.hosts_file());
        if crate::seed::SERVERS.contains(&machine) {
            c.env("FERRY_RUN_DIR", self.lab.run_dir(machine))
                .env("FERRY_HOST_CONFIG", self.lab.host_config(machine));
        }
        c
    }

    /// Runs `ferry ARGS` on `machine`; its stdout, or its last error line.
    fn run_ferry(&self, machine: &str, args: &[&str]) -> StepResult {
        let out = self
            .ferry(machine)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run ferry: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).to_string())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("failed")
                .trim()
                .to_string())
        }
    }

    fn step(
        &mut self,
        say: &mut impl FnMut(&str),
        title: &str,
        f: impl FnOnce(&mut Self) -> StepResult,
    ) -> Result<(), (String, String)> {
        let n = self.report.steps.len() + 1;
        say(&format!("[{n:>2}] {title}"));
        let started = Instant::now();
        let outcome = f(self);
        let ms = started.elapsed().as_millis() as u64;
        let (status, detail) = match outcome {
            Ok(detail) => (StepStatus::Ok, detail),
            Err(reason) => (StepStatus::Failed, reason),
        };
        say(&format!(
            "     {} ({ms} ms){}",
            match status {
                StepStatus::Ok => "ok",
                StepStatus::Failed => "FAILED",
                StepStatus::Skipped => "skipped",
            },
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            }
        ));
        self.report.steps.push(Step {
            title: title.to_string(),
            status,
            detail: detail.clone(),
            ms,
        });
        if status == StepStatus::Failed {
            return Err((title.to_string(), detail));
        }
        Ok(())
    }

    fn walk(&mut self, say: &mut impl FnMut(&str)) -> Result<(), (String, String)> {
        let lab = self.lab.clone();
        self.step(
            say,
            "Build the lab: dc, server001, server002 and client, with external and internal networks",
            |_| {
                // The demo starts from nothing: a lab an earlier run left up
                // (the demo keeps it for a look) holds its SAN and cluster.
                let stale = lab.is_up() || lab.dir().exists();
                if stale {
                    lab.down();
                }
                lab.up().map_err(|e| e.to_string())?;
                Ok(format!(
                    "namespaces {}-*, files in {}{}",
                    lab.name,
                    lab.dir().display(),
                    if stale {
                        " (the lab an earlier run left was removed first)"
                    } else {
                        ""
                    }
                ))
            },
        )?;
        self.step(
            say,
            "Create the SAN disks on dc (witness, data, shared volume) and serve them over iSCSI",
            |d| d.create_san(),
        )?;
        self.step(
            say,
            "Connect both hosts to the SAN: each discovers the target and its LUNs",
            |d| d.discover_san(),
        )?;
        self.step(
            say,
            "Validate the configuration: virtualization, CPUs, both networks, shared LUNs and reservations, clocks, versions",
            |d| d.validate(),
        )?;
        self.step(
            say,
            "Create the cluster: server001 first, server002 joins, dc joins as the witness",
            |d| d.create_cluster(),
        )?;
        let profiles = lab.dir().join("profiles");
        self.step(
            say,
            "Processor compatibility: read both hosts' CPU profiles",
            |d| {
                std::fs::create_dir_all(&profiles).map_err(|e| e.to_string())?;
                let mut digests = Vec::new();
                for server in crate::seed::SERVERS {
                    let out = d.run_ferry(server, &["--json", "host", "cpu"])?;
                    std::fs::write(profiles.join(format!("{server}.json")), &out)
                        .map_err(|e| e.to_string())?;
                    let v: serde_json::Value =
                        serde_json::from_str(&out).map_err(|e| e.to_string())?;
                    digests.push(format!(
                        "{server} {} ({} features)",
                        v["digest"].as_str().unwrap_or("?"),
                        v["profile"]["features"].as_array().map_or(0, Vec::len)
                    ));
                }
                Ok(digests.join(", "))
            },
        )?;
        let spec = lab.dir().join(format!("{VM}.toml"));
        // The VM's disk is the SAN's data LUN; the integrity check reads
        // its image on dc afterwards.
        let image = lab.dir().join("san").join("data.img");
        self.step(
            say,
            "Create the VM in the cluster: its disk on the SAN (LUN 1), processor compatibility on, server002 preferred",
            |d| {
                let detail = d.write_spec(&spec, &image, &profiles)?;
                let spec_arg = spec.display().to_string();
                d.run_cluster(
                    "server001",
                    &["cluster", "vm", "create", &spec_arg, "--preferred", "server002", "--priority", "high"],
                )?;
                Ok(detail)
            },
        )?;
        self.step(say, "Start it through the cluster: placed on server002", |d| {
            let out = d.run_cluster("server001", &["--json", "cluster", "vm", "start", VM])?;
            let v: serde_json::Value = serde_json::from_str(out.trim())
                .map_err(|e| format!("unreadable start report {out:?}: {e}"))?;
            if v["host"] != "server002" {
                return Err(format!("placed on {} instead of server002", v["host"]));
            }
            d.wait_console("server002", "FERRY-ECHO listening", 90)?;
            d.wait_console("server002", "FERRY-MEMTEST ok", 90)?;
            // A freshly booted guest's first seconds show long blackouts
            // (see the design notes); let it settle as a real one would be.
            std::thread::sleep(Duration::from_secs(if d.opts.short { 2 } else { 3 }));
            Ok("booted; counter, memory and disk integrity workloads and a UDP echo responder running".into())
        })?;
        self.step(say, "The client starts probing the VM every 2 ms", |d| {
            d.start_probe()
        })?;
        self.step(
            say,
            "Live-migrate it to server001 through the cluster",
            |d| d.migrate("server002", "server001", false),
        )?;
        self.step(
            say,
            "Quick-migrate it back to server002 through the cluster",
            |d| d.migrate("server001", "server002", true),
        )?;
        self.step(say, "Stop the client and the VM", |d| d.finish())?;
        self.step(
            say,
            "Check integrity: memory, counter, every flushed disk block",
            |d| d.verify(&image),
        )?;
        Ok(())
    }

    fn create_san(&mut self) -> StepResult {
        let dir = self.lab.dir().join("san");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let config = dir.join("san.toml");
        let cfg = config.display().to_string();
        self.run_ferry(
            "dc",
            &[
                "san",
                "target",
                "create",
                "--config",
                &cfg,
                SAN_TARGET,
                "--alias",
                "cluster-disks",
            ],
        )?;
        for (id, file, size) in [
            (0, "witness.img", "64M"),
            (1, "data.img", "1G"),
            (2, "csv.img", "2G"),
        ] {
            let path = dir.join(file).display().to_string();
            self.run_ferry(
                "dc",
                &[
                    "san",
                    "lun",
                    "create",
                    "--config",
                    &cfg,
                    "--target",
                    SAN_TARGET,
                    "--id",
                    &id.to_string(),
                    "--path",
                    &path,
                    "--size",
                    size,
                ],
            )?;
        }
        self.run_ferry("dc", &["san", "portals", "--config", &cfg, SAN_PORTAL])?;
        self.spawn_detached(
            "dc",
            &["san", "serve", "--config", &cfg],
            &dir.join("san.log"),
        )?;
        Ok(format!(
            "target {SAN_TARGET} on {SAN_PORTAL}: LUN 0 witness 64 MiB, LUN 1 data 1 GiB, LUN 2 shared volume 2 GiB (sparse images in {})",
            dir.display()
        ))
    }

    /// Each server asks the SAN what it offers, with libiscsi's `iscsi-ls`
    /// (a standard initiator, which also shows `ferry san` to tools nobody here
    /// wrote); the VM's disk is then opened by Ferry's own initiator.
    fn discover_san(&mut self) -> StepResult {
        let mut seen = Vec::new();
        for server in crate::seed::SERVERS {
            let deadline = Instant::now() + Duration::from_secs(10);
            let listing = loop {
                let out = Command::new("ip")
                    .args(["netns", "exec", &self.lab.netns(server), "iscsi-ls", "-s"])
                    .arg(format!("iscsi://{SAN_PORTAL}"))
                    .output()
                    .map_err(|e| format!("cannot run iscsi-ls (package libiscsi-bin): {e}"))?;
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                if out.status.success() && text.contains(SAN_TARGET) {
                    break text;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "{server} cannot see the SAN: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                std::thread::sleep(Duration::from_millis(200));
            };
            let luns = listing
                .lines()
                .filter(|l| l.trim_start().starts_with("Lun:"))
                .count();
            if luns != 3 {
                return Err(format!("{server} sees {luns} LUNs, not 3:\n{listing}"));
            }
            seen.push(format!("{server}: 3 LUNs"));
        }
        Ok(format!(
            "{}; the VM's disk will be LUN 1, opened by Ferry's initiator on the host that runs it",
            seen.join(", ")
        ))
    }

    fn validate(&mut self) -> StepResult {
        let page = self.lab.dir().join("report").join("validation.html");
        std::fs::create_dir_all(self.lab.dir().join("report")).map_err(|e| e.to_string())?;
        let page_arg = page.display().to_string();
        // Every LUN of the SAN: each host must see the same disks, and
        // reservations are tried on them before the cluster uses them.
        let luns: Vec<String> = (0..3)
            .map(|lun| format!("iscsi://{SAN_PORTAL}/{SAN_TARGET}/{lun}"))
            .collect();
        let out = self
            .ferry("server001")
            .args(["--json", "cluster", "validate", "--html", &page_arg])
            .args(luns.iter().flat_map(|u| ["--lun", u.as_str()]))
            .output()
            .map_err(|e| format!("cannot run ferry: {e}"))?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("unreadable validation report: {e}"))?;
        let results = v["results"].as_array().cloned().unwrap_or_default();
        let count = |o: &str| results.iter().filter(|r| r["outcome"] == o).count();
        let failed: Vec<String> = results
            .iter()
            .filter(|r| r["outcome"] == "fail")
            .map(|r| {
                format!(
                    "{}: {}",
                    r["test"].as_str().unwrap_or("?"),
                    r["reason"].as_str().unwrap_or("?")
                )
            })
            .collect();
        if !out.status.success() || !failed.is_empty() {
            return Err(format!("validation failed: {}", failed.join("; ")));
        }
        Ok(format!(
            "{} passed (incl. the 3 LUNs from both servers, reservations between them), {} warnings (TCG here), 0 failed; {}",
            count("pass"),
            count("warn"),
            page.display()
        ))
    }

    /// A member's configuration file for `machine` (cluster id `id`).
    fn member_config(&self, machine: &str, id: u64) -> Result<PathBuf, String> {
        let dir = self.lab.dir().join("cluster");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let (ext, int) = match machine {
            "dc" => ("10.30.0.1", "10.20.0.1"),
            server => crate::seed::server_addrs(server),
        };
        let role = if machine == "dc" {
            "witness"
        } else {
            "hypervisor"
        };
        let path = dir.join(format!("{machine}.toml"));
        std::fs::write(
            &path,
            format!(
                "id = {id}\nname = \"{machine}\"\nlisten = \"{int}:7441\"\ndata_dir = \"{}\"\n\
                 peers = [\"10.20.0.11:7441\"]\nrole = \"{role}\"\n[networks]\ninternal = \"{int}\"\nexternal = \"{ext}\"\n",
                dir.join(machine).display()
            ),
        )
        .map_err(|e| e.to_string())?;
        Ok(path)
    }

    /// Starts `ferry ARGS` on `machine`, detached, output to `log`: it runs
    /// until the lab goes down, like a host's service.
    fn spawn_detached(&self, machine: &str, args: &[&str], log: &Path) -> Result<(), String> {
        let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new("setsid");
        cmd.args(["ip", "netns", "exec", &self.lab.netns(machine)])
            .arg(&self.opts.ferry)
            .args(args);
        // A server's agent runs its VMs in that server's runtime directory.
        if crate::seed::SERVERS.contains(&machine) {
            cmd.env("FERRY_RUN_DIR", self.lab.run_dir(machine))
                .env("FERRY_HOST_CONFIG", self.lab.host_config(machine));
        }
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start `ferry {}` on {machine}: {e}", args.join(" ")))?;
        Ok(())
    }

    /// The member configuration of `machine` (written by the cluster step).
    fn member_config_path(&self, machine: &str) -> String {
        self.lab
            .dir()
            .join("cluster")
            .join(format!("{machine}.toml"))
            .display()
            .to_string()
    }

    /// `ferry ARGS --config <machine's member configuration>` on `machine`:
    /// a cluster verb as that host's operator runs it.
    fn run_cluster(&self, machine: &str, args: &[&str]) -> StepResult {
        let config = self.member_config_path(machine);
        let mut all = args.to_vec();
        all.extend(["--config", &config]);
        self.run_ferry(machine, &all)
    }

    /// Starts `ferry daemon` on `machine`.
    fn start_daemon(&self, machine: &str, config: &Path) -> Result<(), String> {
        let cfg = config.display().to_string();
        let log = self
            .lab
            .dir()
            .join("cluster")
            .join(format!("{machine}.log"));
        self.spawn_detached(machine, &["daemon", "--config", &cfg], &log)
    }

    /// Waits until `ferry cluster status` on `machine` answers; its JSON.
    fn cluster_status(&self, machine: &str, config: &Path) -> Result<serde_json::Value, String> {
        let cfg = config.display().to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.run_ferry(machine, &["--json", "cluster", "status", "--config", &cfg]) {
                Ok(out) => return serde_json::from_str(&out).map_err(|e| e.to_string()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn create_cluster(&mut self) -> StepResult {
        let first = self.member_config("server001", 1)?;
        let first_arg = first.display().to_string();
        let made = self.run_ferry(
            "server001",
            &["--json", "cluster", "create", "--config", &first_arg],
        )?;
        let made: serde_json::Value = serde_json::from_str(&made).map_err(|e| e.to_string())?;
        let token = made["token"]
            .as_str()
            .ok_or("no token from cluster create")?
            .to_string();
        let ca_cert = made["ca_cert"]
            .as_str()
            .ok_or("no CA certificate from cluster create")?
            .to_string();
        self.start_daemon("server001", &first)?;
        self.cluster_status("server001", &first)?;
        for (machine, id) in [("server002", 2), ("dc", 3)] {
            let config = self.member_config(machine, id)?;
            let cfg = config.display().to_string();
            let join = [
                "--json",
                "cluster",
                "join",
                "--config",
                &cfg,
                "--token",
                &token,
                "--ca-cert",
                &ca_cert,
            ];
            // First pass: this host's certificate; then, its agent running,
            // membership.
            self.run_ferry(machine, &join)?;
            self.start_daemon(machine, &config)?;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match self.run_ferry(machine, &join) {
                    Ok(_) => break,
                    Err(e) if Instant::now() > deadline => {
                        return Err(format!("{machine} could not join: {e}"))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(300)),
                }
            }
        }
        let status = self.cluster_status("server001", &first)?;
        let voters = status["status"]["voters"]
            .as_object()
            .map_or(0, |v| v.len());
        let leader = status["status"]["leader"].clone();
        if voters != 3 {
            return Err(format!(
                "expected 3 voting members, the cluster has {voters}: {status}"
            ));
        }
        self.report.cluster_token_file = first
            .with_file_name("server001")
            .join("api-token")
            .display()
            .to_string();
        Ok(format!("3 voting members (server001, server002, witness dc), leader id {leader}; agents' logs in {}", self.lab.dir().join("cluster").display()))
    }

    fn write_spec(&mut self, spec: &Path, image: &Path, profiles: &Path) -> StepResult {
        // A clean start for the integrity workload's blocks: an earlier
        // demo's generations must not count. The LUN keeps its size.
        let size = DISK_BLOCKS as usize * disktest::BLOCK;
        let lun_image = std::fs::OpenOptions::new()
            .write(true)
            .open(image)
            .map_err(|e| format!("cannot open the data LUN's image {}: {e}", image.display()))?;
        std::os::unix::fs::FileExt::write_all_at(&lun_image, &vec![0u8; size], 0)
            .map_err(|e| format!("cannot clear the data LUN's first blocks: {e}"))?;
        let lun_url = format!("iscsi://{SAN_PORTAL}/{SAN_TARGET}/1");
        let memory = if self.opts.short { 256 } else { 1024 };
        let g = &self.opts.guest_dir;
        let text = format!(
            "name = \"{VM}\"\nvcpus = 1\nmemory_mib = {memory}\ncpu = \"compatible\"\n\
             cpu_baseline = [\"{}\", \"{}\"]\n[boot]\nkernel = \"{}\"\ninitrd = \"{}\"\n\
             cmdline = \"quiet ferry.ip={VM_ADDR}/24 ferry.run=echo:7777 ferry.run=counter:200 \
             ferry.run=memtest:32:16 ferry.run=disktest:/dev/vda:{DISK_BLOCKS}:write\"\n\
             [[disks]]\npath = \"{}\"\n[[nics]]\nmac = \"52:54:00:5e:ed:01\"\nbridge = \"{VM_BRIDGE}\"\n",
            profiles.join("server001.json").display(),
            profiles.join("server002.json").display(),
            g.join("vmlinuz").display(),
            g.join("initramfs.img").display(),
            lun_url
        );
        std::fs::write(spec, text).map_err(|e| e.to_string())?;
        self.report.vm = VM.into();
        Ok(format!(
            "{memory} MiB, CPU = baseline of both hosts, disk = SAN LUN 1 ({lun_url}) through Ferry's block service and initiator on whichever host runs it"
        ))
    }

    fn console(&self, server: &str) -> String {
        std::fs::read_to_string(self.lab.run_dir(server).join(VM).join("console.log"))
            .unwrap_or_default()
    }

    fn wait_console(&self, server: &str, text: &str, secs: u64) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.console(server).contains(text) {
            if Instant::now() > deadline {
                return Err(format!(
                    "{text:?} did not appear on the console within {secs} s"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn start_probe(&mut self) -> StepResult {
        let stop = self.lab.dir().join("probe.stop");
        let _ = std::fs::remove_file(&stop);
        let target = format!("{VM_ADDR}:7777");
        let stop_arg = stop.display().to_string();
        let child = self
            .ferry("client")
            .args(["--json", "probe", &target, "--interval-ms", "2"])
            .args(["--duration", "3600", "--timeline", "--stop-file", &stop_arg])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the probe: {e}"))?;
        self.probe = Some(child);
        std::thread::sleep(Duration::from_millis(if self.opts.short {
            500
        } else {
            1500
        }));
        Ok(format!("{CLIENT_ADDR} -> {target}, UDP"))
    }

    fn migrate(&mut self, from: &str, to: &str, quick: bool) -> StepResult {
        let mut args = vec!["--json", "cluster", "vm", "migrate", VM, "--to", to];
        if quick {
            args.push("--quick");
        }
        let start = unix_ms();
        let out = self.run_cluster(from, &args)?;
        let end = unix_ms();
        let left_behind = self.console(from);
        self.history.push_str(&left_behind);
        let last = out.lines().last().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(last)
            .map_err(|e| format!("unreadable migration report {last:?}: {e}"))?;
        let r = &v["migrated"]["report"];
        if v["migrated"]["to"] != to {
            return Err(format!(
                "the cluster records the VM on {}, not {to}",
                v["migrated"]["to"]
            ));
        }
        let total = r["total_ms"].as_f64().unwrap_or(0.0);
        let downtime = r["downtime_ms"].as_f64().unwrap_or(0.0);
        self.report.migrations.push(MigrationMark {
            kind: if quick { "quick" } else { "live" }.into(),
            from: from.into(),
            to: to.into(),
            start_unix_ms: start,
            switchover_unix_ms: start + (total - downtime).max(0.0),
            end_unix_ms: end,
            total_ms: total,
            downtime_ms: downtime,
        });
        self.report.vm_host = to.into();
        std::thread::sleep(Duration::from_millis(if self.opts.short {
            700
        } else {
            1500
        }));
        Ok(format!(
            "total {total:.0} ms, QEMU downtime {downtime:.0} ms"
        ))
    }

    fn finish(&mut self) -> StepResult {
        let _ = std::fs::write(self.lab.dir().join("probe.stop"), b"");
        let child = self.probe.take().ok_or("the probe is not running")?;
        let out = child
            .wait_with_output()
            .map_err(|e| format!("probe: {e}"))?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("unreadable probe report: {e}"))?;
        let probe: ProbeSummary =
            serde_json::from_value(v).map_err(|e| format!("unreadable probe report: {e}"))?;
        let host = self.report.vm_host.clone();
        self.run_cluster(&host, &["cluster", "vm", "stop", VM])?;
        let detail = format!(
            "{} probes, {} lost, largest gap {:.1} ms; VM stopped on {host}",
            probe.sent, probe.lost, probe.max_gap_ms
        );
        self.report.probe = Some(probe);
        Ok(detail)
    }

    fn verify(&mut self, image: &Path) -> StepResult {
        let history = format!("{}{}", self.history, self.console(&self.report.vm_host));
        let memory_ok =
            history.contains("FERRY-MEMTEST ok") && !history.contains("FERRY-MEMTEST FAIL");
        let counts: Vec<u64> = history
            .lines()
            .filter_map(counter::parse_line)
            .map(|c| c.n)
            .collect();
        let counter_ok = counts.len() > 10 && counts.windows(2).all(|w| w[1] == w[0] + 1);
        let disk = match disktest::last_flushed(&history) {
            None => Err("the disk workload reported no flush".to_string()),
            Some((gen, upto)) => match disktest::check_durable(image, DISK_BLOCKS, gen, upto) {
                Ok(Ok(_)) => Ok(format!("{DISK_BLOCKS} blocks verify (generation {gen})")),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(e.to_string()),
            },
        };
        self.report.integrity.memory_ok = memory_ok;
        self.report.integrity.counter_ok = counter_ok;
        self.report.integrity.disk_ok = disk.is_ok();
        let disk_text = match &disk {
            Ok(t) => t.clone(),
            Err(e) => format!("disk: {e}"),
        };
        self.report.integrity.detail = format!(
            "memory {}, counter {} ({} lines, never back, never skipped), {disk_text}",
            if memory_ok { "ok" } else { "CORRUPTED" },
            if counter_ok { "ok" } else { "BROKEN" },
            counts.len()
        );
        if memory_ok && counter_ok && disk.is_ok() {
            Ok(self.report.integrity.detail.clone())
        } else {
            Err(self.report.integrity.detail.clone())
        }
    }
}

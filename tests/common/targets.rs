//! Real iSCSI targets for initiator tests, each private to one test: tgt
//! (`tgtd` on its own portal and control port, a target nobody here wrote)
//! and `ferry san` (its own config file and port). Both are killed when
//! dropped, so a failing test leaks no target.

use super::{run_ok, ChildGuard, TestEnv};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Fails the test with an install hint when `tool` is missing.
pub fn need(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is missing: install {package} (scripts/install-deps)"
    );
}

/// CHAP settings for a test target: (user, secret) one-way and mutual.
#[derive(Clone, Default)]
pub struct TargetAuth {
    /// The initiator's credentials.
    pub chap: Option<(String, String)>,
    /// The target's credentials (mutual CHAP).
    pub mutual: Option<(String, String)>,
}

/// Which kind of target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// tgtd.
    Tgt,
    /// ferry san.
    Ferry,
}

/// A running test target with one LUN backed by an image file.
pub struct Target {
    /// Which implementation.
    pub kind: Kind,
    /// Its IQN (unique per test).
    pub iqn: String,
    /// The data LUN's number (1 on tgt, whose LUN 0 is its controller).
    pub lun: u64,
    /// TCP port.
    pub port: u16,
    /// Address it listens on (127.0.0.1 unless started in a namespace).
    pub host: String,
    /// Network namespace it runs in, if any.
    ns: Option<String>,
    /// The LUN's image.
    pub image: PathBuf,
    size_mib: u64,
    auth: TargetAuth,
    root: PathBuf,
    control: u16,
    san_config: PathBuf,
    ferry: PathBuf,
    run_dir: PathBuf,
    server: Option<ChildGuard>,
}

impl Target {
    /// Creates and starts a target of `kind` with a `size_mib` LUN.
    pub fn start(env: &TestEnv, kind: Kind, size_mib: u64, auth: TargetAuth) -> Target {
        Self::start_in(env, kind, size_mib, auth, None, "127.0.0.1")
    }

    /// Like [`Target::start`], inside network namespace `ns` (by name),
    /// listening on `host` there.
    pub fn start_in(
        env: &TestEnv,
        kind: Kind,
        size_mib: u64,
        auth: TargetAuth,
        ns: Option<String>,
        host: &str,
    ) -> Target {
        match kind {
            Kind::Tgt => {
                need("tgtd", "tgt");
                need("tgtadm", "tgt");
            }
            Kind::Ferry => {}
        }
        let tag = ferry_lab::unique_name(match kind {
            Kind::Tgt => "tgt",
            Kind::Ferry => "san",
        });
        let iqn = format!("iqn.2026-01.dev.ferry.test:{tag}");
        let image = env.root.join(format!("{tag}.img"));
        let mut t = Target {
            kind,
            iqn,
            lun: if kind == Kind::Tgt { 1 } else { 0 },
            port: free_port(),
            host: host.to_string(),
            ns,
            image,
            size_mib,
            auth,
            root: env.root.clone(),
            // tgtd takes control ports up to 32767.
            control: 20000 + free_port() % 12000,
            san_config: env.root.join(format!("{tag}.toml")),
            ferry: PathBuf::from(env!("CARGO_BIN_EXE_ferry")),
            run_dir: env.run_dir.clone(),
            server: None,
        };
        if kind == Kind::Ferry {
            t.configure_ferry();
        } else {
            let f = std::fs::File::create(&t.image).unwrap();
            f.set_len(size_mib << 20).unwrap();
        }
        t.start_server();
        t
    }

    /// `host:port` of the portal.
    pub fn portal(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `program`, run in the target's namespace if it has one.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// True once something accepts connections on the portal.
    fn listening(&self) -> bool {
        match &self.ns {
            None => TcpStream::connect((self.host.as_str(), self.port)).is_ok(),
            Some(_) => self
                .command("bash")
                .args([
                    "-c",
                    &format!("exec 3<>/dev/tcp/{}/{}", self.host, self.port),
                ])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
        }
    }

    /// The `iscsi://` URL of the data LUN.
    pub fn url(&self) -> String {
        format!("iscsi://{}/{}/{}", self.portal(), self.iqn, self.lun)
    }

    fn ferry_cmd(&self) -> Command {
        let mut c = Command::new(&self.ferry);
        c.env("FERRY_RUN_DIR", &self.run_dir);
        c
    }

    fn configure_ferry(&self) {
        let c = self.san_config.to_str().unwrap();
        run_ok(
            self.ferry_cmd()
                .args(["san", "portals", "--config", c, &self.portal()]),
        );
        let mut args: Vec<String> = ["san", "target", "create", "--config", c, &self.iqn]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some((u, s)) = &self.auth.chap {
            args.extend([
                "--chap-user".into(),
                u.clone(),
                "--chap-secret".into(),
                s.clone(),
            ]);
        }
        if let Some((u, s)) = &self.auth.mutual {
            args.extend([
                "--mutual-user".into(),
                u.clone(),
                "--mutual-secret".into(),
                s.clone(),
            ]);
        }
        run_ok(self.ferry_cmd().args(&args));
        run_ok(self.ferry_cmd().args([
            "san",
            "lun",
            "create",
            "--config",
            c,
            "--target",
            &self.iqn,
            "--id",
            "0",
            "--path",
            self.image.to_str().unwrap(),
            "--size",
            &format!("{}M", self.size_mib),
        ]));
    }

    fn log_path(&self) -> PathBuf {
        self.root
            .join(format!("{}.log", self.iqn.replace(':', "_")))
    }

    /// The target's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the server (again, after [`Target::kill`]).
    pub fn start_server(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = match self.kind {
            Kind::Ferry => self
                .command(&self.ferry)
                .env("FERRY_RUN_DIR", &self.run_dir)
                .args([
                    "san",
                    "serve",
                    "--config",
                    self.san_config.to_str().unwrap(),
                ])
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn ferry san serve"),
            Kind::Tgt => self
                .command("tgtd")
                .args(["-f", "-C", &self.control.to_string(), "--iscsi"])
                .arg(format!("portal={}", self.portal()))
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn tgtd"),
        };
        self.server = Some(ChildGuard(child));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.listening() {
            assert!(
                Instant::now() < deadline,
                "{:?} target did not listen:\n{}",
                self.kind,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.kind == Kind::Tgt {
            self.configure_tgt();
        }
    }

    fn tgtadm(&self, args: &[&str]) {
        let cport = self.control.to_string();
        let mut a = vec!["-C", cport.as_str(), "--lld", "iscsi"];
        a.extend_from_slice(args);
        // tgtd may take a moment to open its control socket.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("tgtadm").args(&a).output().expect("tgtadm");
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tgtadm {a:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn configure_tgt(&self) {
        let img = self.image.to_str().unwrap().to_string();
        self.tgtadm(&[
            "--mode", "target", "--op", "new", "--tid", "1", "-T", &self.iqn,
        ]);
        self.tgtadm(&[
            "--mode",
            "logicalunit",
            "--op",
            "new",
            "--tid",
            "1",
            "--lun",
            "1",
            "-b",
            &img,
        ]);
        self.tgtadm(&[
            "--mode", "target", "--op", "bind", "--tid", "1", "-I", "ALL",
        ]);
        // tgt offers no digests unless told; let the initiator choose.
        for key in ["HeaderDigest", "DataDigest"] {
            self.tgtadm(&[
                "--mode",
                "target",
                "--op",
                "update",
                "--tid",
                "1",
                "--name",
                key,
                "--value",
                "CRC32C,None",
            ]);
        }
        if let Some((u, s)) = &self.auth.chap {
            self.tgtadm(&[
                "--mode",
                "account",
                "--op",
                "new",
                "--user",
                u,
                "--password",
                s,
            ]);
            self.tgtadm(&[
                "--mode", "account", "--op", "bind", "--tid", "1", "--user", u,
            ]);
        }
        if let Some((u, s)) = &self.auth.mutual {
            self.tgtadm(&[
                "--mode",
                "account",
                "--op",
                "new",
                "--user",
                u,
                "--password",
                s,
            ]);
            self.tgtadm(&[
                "--mode",
                "account",
                "--op",
                "bind",
                "--tid",
                "1",
                "--user",
                u,
                "--outgoing",
            ]);
        }
    }

    /// kill -9, as a crash would.
    pub fn kill(&mut self) {
        drop(self.server.take());
    }

    /// A secrets file for this target's credentials, as VM specs name it.
    pub fn secrets_file(&self, secret_override: Option<&str>) -> PathBuf {
        let mut text = String::new();
        if let Some((u, s)) = &self.auth.chap {
            let s = secret_override.unwrap_or(s);
            text.push_str(&format!("chap_user = \"{u}\"\nchap_secret = \"{s}\"\n"));
        }
        if let Some((u, s)) = &self.auth.mutual {
            text.push_str(&format!("mutual_user = \"{u}\"\nmutual_secret = \"{s}\"\n"));
        }
        let p = self
            .root
            .join(ferry_lab::unique_name("secrets"))
            .with_extension("toml");
        std::fs::write(&p, text).unwrap();
        p
    }
}

//! The login phase (RFC 7143 section 6.3) as a state machine without I/O:
//! each Login Request (header and text) goes in, the fields of the Login
//! Response come out. Security stage with AuthMethod None or CHAP (one-way
//! or mutual), operational stage with the keys of [`params`].

pub mod chap;
pub mod params;

use crate::config::Chap;
use crate::pdu::bhs::LoginReq;
use crate::pdu::text::{self, Pairs};
use params::{Answer, Params};

/// Login status classes and details (RFC 7143 11.13.5).
#[allow(missing_docs)]
pub mod status {
    pub const SUCCESS: (u8, u8) = (0, 0);
    pub const INITIATOR_ERROR: (u8, u8) = (2, 0);
    pub const AUTH_FAILED: (u8, u8) = (2, 1);
    pub const FORBIDDEN: (u8, u8) = (2, 2);
    pub const NOT_FOUND: (u8, u8) = (2, 3);
    pub const UNSUPPORTED_VERSION: (u8, u8) = (2, 5);
    pub const TOO_MANY_CONNECTIONS: (u8, u8) = (2, 6);
    pub const MISSING_PARAMETER: (u8, u8) = (2, 7);
    pub const CANNOT_INCLUDE: (u8, u8) = (2, 8);
    pub const SESSION_TYPE: (u8, u8) = (2, 9);
    pub const NO_SESSION: (u8, u8) = (2, 0x0a);
    pub const INVALID_DURING_LOGIN: (u8, u8) = (2, 0x0b);
    pub const TARGET_ERROR: (u8, u8) = (3, 0);
}

/// Login stages (CSG/NSG values).
pub mod stage {
    /// Security negotiation.
    pub const SECURITY: u8 = 0;
    /// Operational negotiation.
    pub const OPERATIONAL: u8 = 1;
    /// Full feature phase.
    pub const FULL_FEATURE: u8 = 3;
}

/// What the login machine needs to know about a target.
#[derive(Debug, Clone, Default)]
pub struct TargetAuth {
    /// TargetAlias to declare.
    pub alias: Option<String>,
    /// Initiators allowed in; empty means all.
    pub allowed_initiators: Vec<String>,
    /// One-way CHAP the initiator must pass.
    pub chap: Option<Chap>,
    /// Target credentials for mutual CHAP.
    pub mutual_chap: Option<Chap>,
}

/// Looks targets up by name; the server implements it over its config.
pub trait Directory {
    /// The target called `name`, if it exists.
    fn target(&self, name: &str) -> Option<TargetAuth>;
    /// Whether a discovery session needs CHAP (never, for now: discovery
    /// lists only the targets an initiator may see).
    fn discovery_chap(&self) -> Option<Chap> {
        None
    }
}

/// Session type chosen at login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionType {
    /// SendTargets only.
    Discovery,
    /// SCSI commands to one target.
    Normal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Auth {
    /// AuthMethod not yet agreed.
    Start,
    /// CHAP chosen; waiting for CHAP_A.
    ChapAlgorithm,
    /// Challenge sent; waiting for CHAP_N/CHAP_R.
    ChapResponse { id: u8, challenge: Vec<u8> },
    /// Authenticated (or no authentication needed).
    Done,
}

/// The reply to one Login Request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// T bit.
    pub transit: bool,
    /// Current stage.
    pub csg: u8,
    /// Next stage (meaningful with T).
    pub nsg: u8,
    /// Status class and detail.
    pub status: (u8, u8),
    /// Text data segment.
    pub data: Vec<u8>,
}

/// Where a login stands once a reply is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// More Login Requests follow.
    Continue,
    /// The full feature phase starts after this reply.
    Complete,
    /// The login failed; close the connection after this reply.
    Failed,
}

/// One connection's login.
#[derive(Debug)]
pub struct Login {
    /// Negotiated parameters so far.
    pub params: Params,
    /// InitiatorName.
    pub initiator: Option<String>,
    /// TargetName (normal sessions).
    pub target: Option<String>,
    /// SessionType.
    pub session_type: SessionType,
    target_auth: TargetAuth,
    auth: Auth,
    first: bool,
    declared: bool,
    pending: Vec<u8>,
    portal_group: u16,
}

fn push(out: &mut Pairs, k: &str, v: impl Into<String>) {
    out.push((k.to_string(), v.into()));
}

impl Login {
    /// A fresh login on a portal of group `portal_group`.
    pub fn new(portal_group: u16) -> Login {
        Login {
            params: Params::default(),
            initiator: None,
            target: None,
            session_type: SessionType::Normal,
            target_auth: TargetAuth::default(),
            auth: Auth::Start,
            first: true,
            declared: false,
            pending: Vec::new(),
            portal_group,
        }
    }

    fn fail(&self, csg: u8, status: (u8, u8)) -> (Reply, Progress) {
        (
            Reply {
                transit: false,
                csg,
                nsg: 0,
                status,
                data: Vec::new(),
            },
            Progress::Failed,
        )
    }

    /// Handles one Login Request.
    pub fn step(&mut self, req: &LoginReq, data: &[u8], dir: &dyn Directory) -> (Reply, Progress) {
        let csg = req.csg;
        if req.version_min > 0 {
            return self.fail(csg, status::UNSUPPORTED_VERSION);
        }
        if csg == 2
            || csg == stage::FULL_FEATURE
            || (req.transit && (req.nsg == 2 || req.nsg <= csg))
        {
            return self.fail(csg, status::INITIATOR_ERROR);
        }
        if req.cont {
            if req.transit || self.pending.len() + data.len() > 64 * 1024 {
                return self.fail(csg, status::INITIATOR_ERROR);
            }
            self.pending.extend_from_slice(data);
            return (
                Reply {
                    transit: false,
                    csg,
                    nsg: 0,
                    status: status::SUCCESS,
                    data: Vec::new(),
                },
                Progress::Continue,
            );
        }
        let mut all = std::mem::take(&mut self.pending);
        all.extend_from_slice(data);
        let pairs = match text::parse(&all) {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(error = %e, "login text rejected");
                return self.fail(csg, status::INITIATOR_ERROR);
            }
        };
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(kk, _)| kk == k)
                .map(|(_, v)| v.as_str())
        };
        let mut out = Pairs::new();
        if self.first {
            self.first = false;
            let Some(ini) = get("InitiatorName") else {
                return self.fail(csg, status::MISSING_PARAMETER);
            };
            self.initiator = Some(ini.to_string());
            self.session_type = match get("SessionType").unwrap_or("Normal") {
                "Normal" => SessionType::Normal,
                "Discovery" => SessionType::Discovery,
                _ => return self.fail(csg, status::SESSION_TYPE),
            };
            if self.session_type == SessionType::Normal {
                let Some(name) = get("TargetName") else {
                    return self.fail(csg, status::MISSING_PARAMETER);
                };
                let Some(t) = dir.target(name) else {
                    return self.fail(csg, status::NOT_FOUND);
                };
                if !t.allowed_initiators.is_empty()
                    && !t.allowed_initiators.iter().any(|a| a == ini)
                {
                    tracing::info!(
                        initiator = ini,
                        target = name,
                        "initiator not in the target's ACL"
                    );
                    return self.fail(csg, status::FORBIDDEN);
                }
                self.target = Some(name.to_string());
                self.target_auth = t;
                push(
                    &mut out,
                    "TargetPortalGroupTag",
                    self.portal_group.to_string(),
                );
                if let Some(a) = &self.target_auth.alias {
                    push(&mut out, "TargetAlias", a.clone());
                }
            } else {
                self.target_auth = TargetAuth {
                    chap: dir.discovery_chap(),
                    ..Default::default()
                };
            }
            if self.target_auth.chap.is_none() && csg == stage::OPERATIONAL {
                self.auth = Auth::Done;
            }
        }
        let result = if csg == stage::SECURITY {
            self.security(&pairs, &mut out)
        } else {
            if self.auth != Auth::Done {
                return self.fail(csg, status::AUTH_FAILED);
            }
            self.operational(&pairs, &mut out)
        };
        if let Err(st) = result {
            return self.fail(csg, st);
        }
        let mut transit = req.transit;
        if csg == stage::SECURITY && self.auth != Auth::Done {
            transit = false;
        }
        let done = transit && req.nsg == stage::FULL_FEATURE;
        if done && !self.declared {
            // Declare our receive limit before leaving the login phase.
            self.declared = true;
            push(
                &mut out,
                "MaxRecvDataSegmentLength",
                self.params.target_mrdsl.to_string(),
            );
        }
        let reply = Reply {
            transit,
            csg,
            nsg: if transit { req.nsg } else { 0 },
            status: status::SUCCESS,
            data: text::encode(&out),
        };
        (
            reply,
            if done {
                Progress::Complete
            } else {
                Progress::Continue
            },
        )
    }

    fn security(&mut self, pairs: &Pairs, out: &mut Pairs) -> Result<(), (u8, u8)> {
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(kk, _)| kk == k)
                .map(|(_, v)| v.as_str())
        };
        let need_chap = self.target_auth.chap.is_some();
        match &self.auth {
            Auth::Start => {
                let Some(methods) = get("AuthMethod") else {
                    if need_chap {
                        return Err(status::AUTH_FAILED);
                    }
                    self.auth = Auth::Done;
                    return self.operational_in_security(pairs, out);
                };
                let offered: Vec<&str> = methods.split(',').collect();
                if need_chap {
                    if !offered.contains(&"CHAP") {
                        return Err(status::AUTH_FAILED);
                    }
                    push(out, "AuthMethod", "CHAP");
                    self.auth = Auth::ChapAlgorithm;
                } else if offered.contains(&"None") {
                    push(out, "AuthMethod", "None");
                    self.auth = Auth::Done;
                } else {
                    return Err(status::AUTH_FAILED);
                }
                self.operational_in_security(pairs, out)
            }
            Auth::ChapAlgorithm => {
                let algs = get("CHAP_A").ok_or(status::AUTH_FAILED)?;
                if !algs.split(',').any(|a| a == "5") {
                    return Err(status::AUTH_FAILED);
                }
                let r = chap::random_bytes(17);
                let id = r[0];
                let challenge = r[1..].to_vec();
                push(out, "CHAP_A", "5");
                push(out, "CHAP_I", id.to_string());
                push(out, "CHAP_C", chap::hex(&challenge));
                self.auth = Auth::ChapResponse { id, challenge };
                Ok(())
            }
            Auth::ChapResponse { id, challenge } => {
                let (id, challenge) = (*id, challenge.clone());
                let name = get("CHAP_N").ok_or(status::AUTH_FAILED)?;
                let resp = get("CHAP_R").ok_or(status::AUTH_FAILED)?;
                let cred = self.target_auth.chap.clone().ok_or(status::AUTH_FAILED)?;
                if let Err(e) = chap::verify(&cred.user, &cred.secret, id, &challenge, name, resp) {
                    tracing::info!(error = %e, initiator = ?self.initiator, "CHAP failed");
                    return Err(status::AUTH_FAILED);
                }
                if let Some(ci) = get("CHAP_I") {
                    // Mutual CHAP: answer the initiator's challenge.
                    let m = self
                        .target_auth
                        .mutual_chap
                        .clone()
                        .ok_or(status::AUTH_FAILED)?;
                    let cid: u8 = ci.parse().map_err(|_| status::AUTH_FAILED)?;
                    let cc = get("CHAP_C").ok_or(status::AUTH_FAILED)?;
                    let cc = chap::decode_binary(cc).map_err(|_| status::AUTH_FAILED)?;
                    if cc == challenge {
                        tracing::info!(error = %chap::ChapError::Reflection, "CHAP failed");
                        return Err(status::AUTH_FAILED);
                    }
                    push(out, "CHAP_N", m.user.clone());
                    push(
                        out,
                        "CHAP_R",
                        chap::hex(&chap::response(cid, m.secret.as_bytes(), &cc)),
                    );
                }
                self.auth = Auth::Done;
                Ok(())
            }
            Auth::Done => self.operational_in_security(pairs, out),
        }
    }

    /// Operational keys that arrive during the security stage are
    /// negotiated too (RFC 7143 allows it).
    fn operational_in_security(&mut self, pairs: &Pairs, out: &mut Pairs) -> Result<(), (u8, u8)> {
        let rest: Pairs = pairs
            .iter()
            .filter(|(k, _)| k != "AuthMethod" && !k.starts_with("CHAP_"))
            .cloned()
            .collect();
        self.operational(&rest, out)
    }

    fn operational(&mut self, pairs: &Pairs, out: &mut Pairs) -> Result<(), (u8, u8)> {
        let discovery = self.session_type == SessionType::Discovery;
        for (k, v) in pairs {
            if k == "AuthMethod" || k.starts_with("CHAP_") {
                continue;
            }
            match self.params.offer(k, v, discovery) {
                Ok(Answer::Value(a)) => push(out, k, a),
                Ok(Answer::Silent) => {
                    if k == "MaxRecvDataSegmentLength" && !self.declared {
                        self.declared = true;
                        push(out, k, self.params.target_mrdsl.to_string());
                    }
                }
                Ok(Answer::NotUnderstood) => push(out, k, "NotUnderstood"),
                Ok(Answer::Irrelevant) => push(out, k, "Irrelevant"),
                Ok(Answer::Reject) => push(out, k, "Reject"),
                Err(e) => {
                    tracing::info!(error = %e, "login parameter rejected");
                    return Err(status::INITIATOR_ERROR);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(TargetAuth);
    impl Directory for Dir {
        fn target(&self, name: &str) -> Option<TargetAuth> {
            (name == "iqn.2026-01.t:x").then(|| self.0.clone())
        }
    }

    fn req(csg: u8, nsg: u8, transit: bool) -> LoginReq {
        LoginReq {
            csg,
            nsg,
            transit,
            ..Default::default()
        }
    }

    fn kv(r: &Reply) -> Pairs {
        text::parse(&r.data).expect("reply text")
    }

    #[test]
    fn no_auth_straight_to_full_feature() {
        let dir = Dir(TargetAuth::default());
        let mut l = Login::new(1);
        let (r, p) = l.step(
            &req(1, 3, true),
            b"InitiatorName=iqn.i\0TargetName=iqn.2026-01.t:x\0HeaderDigest=None\0",
            &dir,
        );
        assert_eq!(p, Progress::Complete);
        assert!(r.transit);
        let pairs = kv(&r);
        assert!(pairs.contains(&("TargetPortalGroupTag".into(), "1".into())));
        assert!(pairs.iter().any(|(k, _)| k == "MaxRecvDataSegmentLength"));
    }

    #[test]
    fn unknown_target_and_acl() {
        let dir = Dir(TargetAuth {
            allowed_initiators: vec!["iqn.ok".into()],
            ..Default::default()
        });
        let (r, p) = Login::new(1).step(
            &req(1, 3, true),
            b"InitiatorName=iqn.i\0TargetName=iqn.nope\0",
            &dir,
        );
        assert_eq!((r.status, p), (status::NOT_FOUND, Progress::Failed));
        let (r, _) = Login::new(1).step(
            &req(1, 3, true),
            b"InitiatorName=iqn.i\0TargetName=iqn.2026-01.t:x\0",
            &dir,
        );
        assert_eq!(r.status, status::FORBIDDEN);
        let (r, _) = Login::new(1).step(&req(1, 3, true), b"TargetName=iqn.2026-01.t:x\0", &dir);
        assert_eq!(r.status, status::MISSING_PARAMETER);
    }

    #[test]
    fn mutual_chap() {
        let dir = Dir(TargetAuth {
            chap: Some(Chap {
                user: "ini".into(),
                secret: "isecret123456".into(),
            }),
            mutual_chap: Some(Chap {
                user: "tgt".into(),
                secret: "tsecret123456".into(),
            }),
            ..Default::default()
        });
        let mut l = Login::new(1);
        let (r, p) = l.step(
            &req(0, 1, true),
            b"InitiatorName=iqn.i\0TargetName=iqn.2026-01.t:x\0AuthMethod=CHAP,None\0",
            &dir,
        );
        assert_eq!(p, Progress::Continue);
        assert!(!r.transit);
        assert!(kv(&r).contains(&("AuthMethod".into(), "CHAP".into())));
        let (r, _) = l.step(&req(0, 1, false), b"CHAP_A=5\0", &dir);
        let pairs = kv(&r);
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(kk, _)| kk == k)
                .map(|(_, v)| v.clone())
                .expect(k)
        };
        let id: u8 = get("CHAP_I").parse().expect("id");
        let c = chap::decode_binary(&get("CHAP_C")).expect("challenge");
        let resp = chap::hex(&chap::response(id, b"isecret123456", &c));
        let mine = [9u8; 16];
        let msg = format!(
            "CHAP_N=ini\0CHAP_R={resp}\0CHAP_I=7\0CHAP_C={}\0",
            chap::hex(&mine)
        );
        let (r, p) = l.step(&req(0, 1, true), msg.as_bytes(), &dir);
        assert_eq!(
            (r.status, p, r.transit),
            (status::SUCCESS, Progress::Continue, true)
        );
        let pairs = kv(&r);
        assert!(pairs.contains(&(
            "CHAP_R".into(),
            chap::hex(&chap::response(7, b"tsecret123456", &mine))
        )));
        let (_, p) = l.step(&req(1, 3, true), b"MaxBurstLength=65536\0", &dir);
        assert_eq!(p, Progress::Complete);
    }

    #[test]
    fn chap_required_but_skipped_or_wrong() {
        let dir = Dir(TargetAuth {
            chap: Some(Chap {
                user: "u".into(),
                secret: "s".into(),
            }),
            ..Default::default()
        });
        let (r, _) = Login::new(1).step(
            &req(1, 3, true),
            b"InitiatorName=iqn.i\0TargetName=iqn.2026-01.t:x\0",
            &dir,
        );
        assert_eq!(r.status, status::AUTH_FAILED);
        let mut l = Login::new(1);
        l.step(
            &req(0, 1, true),
            b"InitiatorName=iqn.i\0TargetName=iqn.2026-01.t:x\0AuthMethod=CHAP\0",
            &dir,
        );
        l.step(&req(0, 1, false), b"CHAP_A=5\0", &dir);
        let (r, p) = l.step(
            &req(0, 1, true),
            b"CHAP_N=u\0CHAP_R=0x00112233445566778899aabbccddeeff\0",
            &dir,
        );
        assert_eq!((r.status, p), (status::AUTH_FAILED, Progress::Failed));
    }
}

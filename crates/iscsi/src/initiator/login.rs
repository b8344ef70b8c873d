//! The initiator's side of login (RFC 7143 section 6): the security stage
//! with CHAP (one-way or mutual), the operational stage that settles
//! digests, burst sizes and R2T rules, and discovery with SendTargets.

use super::wire::Wire;
use super::IscsiError;
use crate::login::chap;
use crate::pdu::bhs::{self, Header};
use crate::pdu::{text, Digests, Pdu};
use std::time::Duration;

/// A CHAP user name and secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Chap {
    /// CHAP_N.
    pub user: String,
    /// The shared secret.
    pub secret: String,
}

impl std::fmt::Debug for Chap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        write!(f, "Chap {{ user: {:?} }}", self.user)
    }
}

/// Who we are and how we prove it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginConfig {
    /// host:port of the portal.
    pub portal: String,
    /// The target's IQN.
    pub target: String,
    /// Our initiator name.
    pub initiator: String,
    /// Initiator session ID: with the initiator name it names the I_T
    /// nexus that persistent reservations are bound to.
    pub isid: [u8; 6],
    /// One-way CHAP: our credentials for the target.
    pub chap: Option<Chap>,
    /// Mutual CHAP: what the target must prove it knows.
    pub mutual: Option<Chap>,
    /// Ask for CRC32C header and data digests.
    pub digests: bool,
    /// Connect and login answer timeout.
    pub timeout: Duration,
}

/// What the login settled for the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Digests on the connection.
    pub digests: Digests,
    /// Largest data segment we may send (the target's MaxRecvDataSegmentLength).
    pub max_send: u32,
    /// Largest data segment we accept.
    pub max_recv: u32,
    /// MaxBurstLength.
    pub max_burst: u32,
    /// FirstBurstLength.
    pub first_burst: u32,
    /// ImmediateData.
    pub immediate_data: bool,
    /// InitialR2T.
    pub initial_r2t: bool,
    /// CmdSN of the first command.
    pub cmd_sn: u32,
    /// ExpStatSN for the first command.
    pub exp_stat_sn: u32,
    /// The target's ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// The target's MaxCmdSN.
    pub max_cmd_sn: u32,
}

/// What we accept in one data segment.
pub const OUR_MRDSL: u32 = 262_144;
/// The burst we ask for.
const OUR_MAX_BURST: u32 = 1024 * 1024;
/// The unsolicited burst we ask for.
const OUR_FIRST_BURST: u32 = 262_144;

struct Exchange<'a> {
    wire: &'a mut Wire,
    cfg: &'a LoginConfig,
    cmd_sn: u32,
    exp_stat_sn: u32,
    tsih: u16,
    last: Option<bhs::LoginResp>,
}

fn get<'p>(pairs: &'p text::Pairs, k: &str) -> Option<&'p str> {
    pairs
        .iter()
        .find(|(kk, _)| kk == k)
        .map(|(_, v)| v.as_str())
}

impl Exchange<'_> {
    fn step(
        &mut self,
        csg: u8,
        nsg: u8,
        transit: bool,
        keys: &[(String, String)],
    ) -> Result<(text::Pairs, bool, u8), IscsiError> {
        let h = bhs::LoginReq {
            transit,
            cont: false,
            csg,
            nsg,
            version_max: 0,
            version_min: 0,
            isid: self.cfg.isid,
            tsih: self.tsih,
            itt: 0,
            cid: 0,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
        };
        self.wire
            .send(&Pdu::new(Header::LoginReq(h), text::encode(keys)))?;
        let p = self.wire.recv()?;
        let Header::LoginResp(r) = p.header else {
            return Err(self.protocol(format!("{:?} during login", p.header.opcode())));
        };
        if r.status_class != 0 {
            return Err(self.refused(r.status_class, r.status_detail));
        }
        self.exp_stat_sn = r.stat_sn.wrapping_add(1);
        self.tsih = r.tsih;
        let pairs = text::parse(&p.data).map_err(|e| self.protocol(e.to_string()))?;
        let out = (pairs, r.transit, r.nsg);
        self.last = Some(r);
        Ok(out)
    }

    fn protocol(&self, what: String) -> IscsiError {
        IscsiError::Protocol {
            portal: self.cfg.portal.clone(),
            what,
        }
    }

    fn refused(&self, class: u8, detail: u8) -> IscsiError {
        let target = self.cfg.target.clone();
        match (class, detail) {
            (2, 1) => match &self.cfg.chap {
                Some(c) => IscsiError::ChapRefused {
                    target,
                    user: c.user.clone(),
                },
                None => IscsiError::ChapRequired { target },
            },
            (2, 2) => IscsiError::NotAuthorized {
                target,
                initiator: self.cfg.initiator.clone(),
            },
            (2, 3) | (2, 4) => IscsiError::UnknownTarget {
                target,
                portal: self.cfg.portal.clone(),
                known: String::new(),
            },
            _ => IscsiError::LoginRefused {
                target,
                class,
                detail,
            },
        }
    }

    /// The security stage, up to the move to the operational stage.
    fn security(&mut self, first: Vec<(String, String)>) -> Result<(), IscsiError> {
        let mut keys = first;
        let Some(chap_cfg) = self.cfg.chap.clone() else {
            keys.push(("AuthMethod".into(), "None".into()));
            let (pairs, transit, _) = self.step(0, 1, true, &keys)?;
            if get(&pairs, "AuthMethod") == Some("CHAP") || !transit {
                return Err(IscsiError::ChapRequired {
                    target: self.cfg.target.clone(),
                });
            }
            return Ok(());
        };
        keys.push(("AuthMethod".into(), "CHAP,None".into()));
        let (pairs, transit, _) = self.step(0, 1, false, &keys)?;
        match get(&pairs, "AuthMethod") {
            Some("CHAP") => {}
            Some("None") if self.cfg.mutual.is_some() => {
                // The target would not prove who it is.
                return Err(IscsiError::MutualChapFailed {
                    target: self.cfg.target.clone(),
                    user: self
                        .cfg
                        .mutual
                        .as_ref()
                        .map(|m| m.user.clone())
                        .unwrap_or_default(),
                });
            }
            Some("None") => {
                if !transit {
                    self.step(0, 1, true, &[])?;
                }
                return Ok(());
            }
            other => {
                return Err(self.protocol(format!(
                    "target answered AuthMethod={other:?} to an offer of CHAP"
                )))
            }
        }
        let (pairs, _, _) = self.step(0, 1, false, &[("CHAP_A".into(), "5".into())])?;
        let id: u8 = get(&pairs, "CHAP_I")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| self.protocol("no CHAP_I in the challenge".into()))?;
        let challenge = get(&pairs, "CHAP_C")
            .ok_or_else(|| self.protocol("no CHAP_C in the challenge".into()))?;
        let challenge = chap::decode_binary(challenge).map_err(|e| self.protocol(e.to_string()))?;
        let resp = chap::hex(&chap::response(id, chap_cfg.secret.as_bytes(), &challenge));
        let mut keys = vec![
            ("CHAP_N".to_string(), chap_cfg.user.clone()),
            ("CHAP_R".to_string(), resp),
        ];
        let mut ours = None;
        if self.cfg.mutual.is_some() {
            let bytes = chap::random_bytes(17);
            let my_id = bytes[0];
            let my_challenge = bytes[1..].to_vec();
            keys.push(("CHAP_I".into(), my_id.to_string()));
            keys.push(("CHAP_C".into(), chap::hex(&my_challenge)));
            ours = Some((my_id, my_challenge));
        }
        let (pairs, _, _) = self.step(0, 1, true, &keys)?;
        if let (Some(m), Some((id, challenge))) = (&self.cfg.mutual, ours) {
            let failed = || IscsiError::MutualChapFailed {
                target: self.cfg.target.clone(),
                user: m.user.clone(),
            };
            let name = get(&pairs, "CHAP_N").ok_or_else(failed)?;
            let r = get(&pairs, "CHAP_R").ok_or_else(failed)?;
            chap::verify(&m.user, &m.secret, id, &challenge, name, r).map_err(|_| failed())?;
        }
        Ok(())
    }

    /// Sends our operational keys until the target agrees to full feature.
    fn operational(&mut self) -> Result<Negotiated, IscsiError> {
        let digest = if self.cfg.digests {
            "CRC32C,None"
        } else {
            "None"
        };
        let offered: Vec<(String, String)> = [
            ("HeaderDigest", digest.to_string()),
            ("DataDigest", digest.to_string()),
            ("MaxRecvDataSegmentLength", OUR_MRDSL.to_string()),
            ("MaxBurstLength", OUR_MAX_BURST.to_string()),
            ("FirstBurstLength", OUR_FIRST_BURST.to_string()),
            ("ImmediateData", "Yes".into()),
            ("InitialR2T", "No".into()),
            ("MaxOutstandingR2T", "1".into()),
            ("MaxConnections", "1".into()),
            ("DataPDUInOrder", "Yes".into()),
            ("DataSequenceInOrder", "Yes".into()),
            ("ErrorRecoveryLevel", "0".into()),
            ("DefaultTime2Wait", "0".into()),
            ("DefaultTime2Retain", "0".into()),
            ("IFMarker", "No".into()),
            ("OFMarker", "No".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut answers: text::Pairs = Vec::new();
        let mut keys = offered;
        for _ in 0..8 {
            let (pairs, transit, nsg) = self.step(1, 3, true, &keys)?;
            for (k, v) in pairs {
                answers.retain(|(kk, _)| *kk != k);
                answers.push((k, v));
            }
            if transit && nsg == 3 {
                return self.settle(&answers);
            }
            keys = Vec::new();
        }
        Err(self.protocol("operational negotiation did not finish in 8 rounds".into()))
    }

    fn settle(&self, a: &text::Pairs) -> Result<Negotiated, IscsiError> {
        let num = |k: &str, dflt: u32| -> u32 {
            get(a, k)
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(dflt)
        };
        let yes = |k: &str, dflt: bool| match get(a, k) {
            Some("Yes") => true,
            Some("No") => false,
            _ => dflt,
        };
        let crc = |k: &str| get(a, k) == Some("CRC32C");
        let r = self
            .last
            .clone()
            .ok_or_else(|| self.protocol("no login response".into()))?;
        // An unanswered key keeps its RFC 7143 default.
        Ok(Negotiated {
            digests: Digests {
                header: crc("HeaderDigest"),
                data: crc("DataDigest"),
            },
            max_send: num("MaxRecvDataSegmentLength", 8192).max(512),
            max_recv: OUR_MRDSL,
            max_burst: num("MaxBurstLength", 262_144).clamp(512, OUR_MAX_BURST),
            first_burst: num("FirstBurstLength", 65_536).clamp(512, OUR_FIRST_BURST),
            immediate_data: yes("ImmediateData", true),
            initial_r2t: yes("InitialR2T", true),
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            exp_cmd_sn: r.exp_cmd_sn,
            max_cmd_sn: r.max_cmd_sn,
        })
    }
}

/// Connects and logs in to a normal session; on success the wire carries
/// the negotiated digests.
pub fn login(cfg: &LoginConfig, cmd_sn: u32) -> Result<(Wire, Negotiated), IscsiError> {
    let mut wire = Wire::connect(&cfg.portal, cfg.timeout)?;
    let mut ex = Exchange {
        wire: &mut wire,
        cfg,
        cmd_sn,
        exp_stat_sn: 0,
        tsih: 0,
        last: None,
    };
    let first = vec![
        ("InitiatorName".to_string(), cfg.initiator.clone()),
        ("TargetName".to_string(), cfg.target.clone()),
        ("SessionType".to_string(), "Normal".to_string()),
    ];
    let result = ex.security(first).and_then(|()| ex.operational());
    let neg = match result {
        Ok(n) => n,
        Err(IscsiError::UnknownTarget { target, portal, .. }) => {
            let known = match discover(cfg) {
                Ok(list) if list.is_empty() => "nothing".to_string(),
                Ok(list) => list
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                Err(e) => format!("discovery failed: {e}"),
            };
            return Err(IscsiError::UnknownTarget {
                target,
                portal,
                known,
            });
        }
        Err(e) => return Err(e),
    };
    wire.digests = neg.digests;
    wire.max_recv = neg.max_recv as usize;
    Ok((wire, neg))
}

/// A target SendTargets discovery lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredTarget {
    /// Its IQN.
    pub name: String,
    /// Its portals as `address:port,tpgt`.
    pub addresses: Vec<String>,
}

/// Parses a SendTargets answer (TargetName=/TargetAddress= pairs, keys
/// repeating, so not through [`text::parse`]).
pub fn parse_send_targets(data: &[u8]) -> Vec<DiscoveredTarget> {
    let mut out: Vec<DiscoveredTarget> = Vec::new();
    for raw in data.split(|b| *b == 0) {
        let Ok(entry) = std::str::from_utf8(raw) else {
            continue;
        };
        match entry.split_once('=') {
            Some(("TargetName", v)) => out.push(DiscoveredTarget {
                name: v.to_string(),
                addresses: Vec::new(),
            }),
            Some(("TargetAddress", v)) => {
                if let Some(t) = out.last_mut() {
                    t.addresses.push(v.to_string());
                }
            }
            _ => {}
        }
    }
    out
}

/// Logs in to a discovery session at the portal and lists its targets
/// (SendTargets=All), with the same CHAP credentials when given.
pub fn discover(cfg: &LoginConfig) -> Result<Vec<DiscoveredTarget>, IscsiError> {
    // Discovery sessions rarely need CHAP; try without, then with.
    let open = LoginConfig {
        chap: None,
        mutual: None,
        ..cfg.clone()
    };
    match discover_with(&open) {
        Err(IscsiError::ChapRequired { .. }) if cfg.chap.is_some() => discover_with(cfg),
        other => other,
    }
}

fn discover_with(cfg: &LoginConfig) -> Result<Vec<DiscoveredTarget>, IscsiError> {
    let mut wire = Wire::connect(&cfg.portal, cfg.timeout)?;
    let mut ex = Exchange {
        wire: &mut wire,
        cfg,
        cmd_sn: 1,
        exp_stat_sn: 0,
        tsih: 0,
        last: None,
    };
    let first = vec![
        ("InitiatorName".to_string(), cfg.initiator.clone()),
        ("SessionType".to_string(), "Discovery".to_string()),
    ];
    ex.security(first)?;
    let (exp_stat_sn, cmd_sn) = {
        let (_, transit, nsg) = ex.step(
            1,
            3,
            true,
            &[("MaxRecvDataSegmentLength".into(), OUR_MRDSL.to_string())],
        )?;
        if !(transit && nsg == 3) {
            return Err(ex.protocol("discovery login did not reach full feature".into()));
        }
        (ex.exp_stat_sn, ex.cmd_sn)
    };
    wire.max_recv = OUR_MRDSL as usize;
    let mut data = Vec::new();
    let mut ttt = 0xffff_ffff;
    let mut keys = text::encode(&[("SendTargets".into(), "All".into())]);
    for _ in 0..64 {
        let h = bhs::TextReq {
            immediate: true,
            final_: true,
            cont: false,
            lun: 0,
            itt: 1,
            ttt,
            cmd_sn,
            exp_stat_sn,
        };
        wire.send(&Pdu::new(Header::TextReq(h), std::mem::take(&mut keys)))?;
        let p = wire.recv()?;
        let Header::TextResp(r) = p.header else {
            return Err(IscsiError::Protocol {
                portal: cfg.portal.clone(),
                what: format!("{:?} in answer to SendTargets", p.header.opcode()),
            });
        };
        data.extend_from_slice(&p.data);
        if !r.cont {
            break;
        }
        ttt = r.ttt;
    }
    let logout = bhs::LogoutReq {
        immediate: true,
        reason: 0,
        itt: 2,
        cid: 0,
        cmd_sn,
        exp_stat_sn,
    };
    let _ = wire.send(&Pdu::new(Header::LogoutReq(logout), Vec::new()));
    Ok(parse_send_targets(&data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_targets_with_repeated_keys() {
        let data = b"TargetName=iqn.a\0TargetAddress=10.0.0.1:3260,1\0TargetAddress=[::1]:3260,1\0TargetName=iqn.b\0";
        let t = parse_send_targets(data);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].name, "iqn.a");
        assert_eq!(t[0].addresses.len(), 2);
        assert!(t[1].addresses.is_empty());
    }

    #[test]
    fn chap_debug_hides_the_secret() {
        let c = Chap {
            user: "u".into(),
            secret: "topsecret".into(),
        };
        assert!(!format!("{c:?}").contains("topsecret"));
    }
}

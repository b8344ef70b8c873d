//! Disks on iSCSI LUNs: a disk's `path` may be an
//! `iscsi://PORTAL[:PORT]/IQN/LUN` URL. Credentials never appear in it;
//! they come from a secrets file (the disk's `secrets`, or
//! [`DEFAULT_SECRETS`]).

/// Where the block service looks for iSCSI credentials when a disk names
/// no secrets file.
pub const DEFAULT_SECRETS: &str = "/etc/ferry/iscsi-secrets.toml";
/// The iSCSI port when the URL names none.
pub const DEFAULT_PORT: u16 = 3260;

/// The iSCSI initiator name Ferry uses for host `host`: one prefix for
/// every Ferry host, then the host name lowercased, with anything an IQN
/// may not hold replaced by `-` ("host" if nothing is left).
pub fn initiator_name_for(host: &str) -> String {
    let host: String = host
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!(
        "iqn.2026-01.dev.ferry:{}",
        if host.is_empty() { "host" } else { &host }
    )
}

/// A parsed `iscsi://` disk URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IscsiUrl {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Target IQN (or EUI/NAA name).
    pub target: String,
    /// LUN number.
    pub lun: u64,
}

impl IscsiUrl {
    /// True when `path` is meant as an iSCSI URL (whether valid or not).
    pub fn is_iscsi(path: &str) -> bool {
        path.starts_with("iscsi://")
    }

    /// Parses `iscsi://PORTAL[:PORT]/IQN/LUN`; the error says what is wrong.
    pub fn parse(url: &str) -> Result<IscsiUrl, String> {
        let shape = "expected iscsi://PORTAL[:PORT]/IQN/LUN, e.g. iscsi://10.0.0.5:3260/iqn.2026-01.dev.ferry:disks/0";
        let rest = url
            .strip_prefix("iscsi://")
            .ok_or_else(|| format!("{url:?} does not start with iscsi://; {shape}"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [portal, target, lun] = parts[..] else {
            return Err(format!("{url:?}: {shape}"));
        };
        if portal.contains('@') {
            return Err(format!(
                "{url:?} carries credentials; put them in a secrets file (the disk's `secrets`), never in the URL"
            ));
        }
        let (host, port) = if let Some(v6) = portal.strip_prefix('[') {
            let (h, tail) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed '[' in the portal"))?;
            (h, tail.strip_prefix(':'))
        } else {
            match portal.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (portal, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?} names no portal host; {shape}"));
        }
        let port =
            match port {
                None => DEFAULT_PORT,
                Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                    format!("{url:?}: port {p:?} is not a number from 1 to 65535")
                })?,
            };
        let ok_name = |c: char| c.is_ascii_alphanumeric() || "-.:".contains(c);
        if !(target.starts_with("iqn.") || target.starts_with("eui.") || target.starts_with("naa."))
            || !target.chars().all(ok_name)
            || target.len() > 223
        {
            return Err(format!(
                "{url:?}: target {target:?} is not an iSCSI name (iqn.YYYY-MM.domain:name, at most 223 characters)"
            ));
        }
        let lun = lun
            .parse::<u64>()
            .ok()
            .filter(|l| *l < 16384)
            .ok_or_else(|| format!("{url:?}: LUN {lun:?} is not a number from 0 to 16383"))?;
        Ok(IscsiUrl {
            host: host.to_string(),
            port,
            target: target.to_string(),
            lun,
        })
    }

    /// `host:port` for connecting (IPv6 in brackets).
    pub fn portal(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn initiator_names_are_lowercase_iqns_of_the_host() {
        assert_eq!(
            super::initiator_name_for(" Server_01\n"),
            "iqn.2026-01.dev.ferry:server-01"
        );
        assert_eq!(super::initiator_name_for(""), "iqn.2026-01.dev.ferry:host");
    }

    use super::*;

    #[test]
    fn parses_and_names_what_is_wrong() {
        let u = IscsiUrl::parse("iscsi://10.0.0.5/iqn.2026-01.dev.ferry:d/3").unwrap();
        assert_eq!((u.portal(), u.lun), ("10.0.0.5:3260".to_string(), 3));
        let u = IscsiUrl::parse("iscsi://[::1]:3261/iqn.2026-01.x:y/0").unwrap();
        assert_eq!(u.portal(), "[::1]:3261");
        let err = |s: &str| IscsiUrl::parse(s).unwrap_err();
        assert!(err("iscsi://h/iqn.x:y").contains("expected iscsi://"));
        assert!(err("iscsi://u%p@h/iqn.x:y/0").contains("secrets file"));
        assert!(err("iscsi://h:99999/iqn.x:y/0").contains("port"));
        assert!(err("iscsi://h/target/0").contains("not an iSCSI name"));
        assert!(err("iscsi://h/iqn.x:y/z").contains("LUN \"z\""));
    }
}

//! Login negotiation: a sequence of Login Requests (header bytes and text)
//! against a target with CHAP; every step must reply or fail, never panic.
#![no_main]
use ferry_iscsi::config::Chap;
use ferry_iscsi::login::{Directory, Login, Progress, TargetAuth};
use ferry_iscsi::pdu::bhs::Header;

struct Dir;
impl Directory for Dir {
    fn target(&self, name: &str) -> Option<TargetAuth> {
        (name == "iqn.2026-01.t:x").then(|| TargetAuth {
            chap: Some(Chap { user: "u".into(), secret: "secretsecret".into() }),
            mutual_chap: Some(Chap { user: "t".into(), secret: "othersecret".into() }),
            ..Default::default()
        })
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut login = Login::new(1);
    // Each step: 48 header bytes, a length byte, then that much text.
    let mut rest = data;
    while rest.len() > 49 {
        let mut bhs = [0u8; 48];
        bhs.copy_from_slice(&rest[..48]);
        bhs[0] = 0x43;
        let n = usize::from(rest[48]).min(rest.len() - 49);
        let text = &rest[49..49 + n];
        rest = &rest[49 + n..];
        let Ok(Header::LoginReq(req)) = Header::decode(&bhs) else { return };
        let (_, progress) = login.step(&req, text, &Dir);
        if progress != Progress::Continue {
            return;
        }
    }
});

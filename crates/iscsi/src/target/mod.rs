//! The target side of iSCSI: the full-feature-phase state machine of a
//! connection ([`ffp`]), the CmdSN window ([`window`]), what a session's
//! connections share ([`session`]), the registry of targets and sessions
//! ([`registry`]) and the tokio server that moves
//! bytes ([`connection`], [`server`]).

pub mod connection;
pub mod ffp;
pub mod registry;
pub mod server;
pub mod session;
pub mod window;

pub use registry::Registry;
pub use server::serve;

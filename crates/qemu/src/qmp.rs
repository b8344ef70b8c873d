//! A small QMP client: capabilities negotiation, commands, and events.
//!
//! QMP is line-delimited JSON over a unix socket. A reader task routes each
//! message: replies (`return`/`error`) go to the command waiting for that
//! `id`, asynchronous events go to the event channel. When QEMU goes away,
//! every waiting command fails with [`QmpError::Disconnected`] and the event
//! channel closes, which is how callers learn that QEMU died.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

/// Longest QMP message accepted; larger ones close the connection.
pub const MAX_MESSAGE_BYTES: u64 = 16 * 1024 * 1024;

/// QMP failures.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be reached.
    #[error("cannot connect to QMP socket {path}")]
    Connect {
        /// The socket.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// QEMU closed the connection (it exited or crashed).
    #[error("QMP connection closed (QEMU exited?)")]
    Disconnected,
    /// QEMU sent something that is not QMP.
    #[error("bad QMP message: {0}")]
    Protocol(String),
    /// QEMU refused the command.
    #[error("QEMU refused {command}: {desc} ({class})")]
    Command {
        /// The command.
        command: String,
        /// QMP error class.
        class: String,
        /// QEMU's description.
        desc: String,
    },
    /// No reply in time.
    #[error("QEMU did not answer {command} within {secs} s")]
    Timeout {
        /// The command.
        command: String,
        /// The timeout.
        secs: u64,
    },
    /// Writing to the socket failed.
    #[error("QMP socket I/O")]
    Io(#[source] std::io::Error),
    /// A command relayed to a QEMU on another host (by that host's agent)
    /// failed there or on the way.
    #[error("{command} on the other host: {message}")]
    Relay {
        /// The command.
        command: String,
        /// What the other host or the link said.
        message: String,
    },
}

/// An asynchronous event from QEMU (`STOP`, `RESUME`, `SHUTDOWN`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QmpEvent {
    /// Event name.
    pub name: String,
    /// Event data (`null` when none).
    pub data: Value,
    /// QEMU's timestamp, seconds since the epoch.
    pub timestamp: f64,
}

/// One decoded QMP message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// The greeting QEMU sends first, with its version.
    Greeting(Value),
    /// A successful reply.
    Return {
        /// The `id` echoed back.
        id: Option<u64>,
        /// The result.
        value: Value,
    },
    /// A failed reply.
    Error {
        /// The `id` echoed back.
        id: Option<u64>,
        /// Error class.
        class: String,
        /// Description.
        desc: String,
    },
    /// An event.
    Event(QmpEvent),
}

/// Decodes one line of QMP. Never panics on any input.
pub fn decode(line: &[u8]) -> Result<Message, QmpError> {
    let v: Value =
        serde_json::from_slice(line).map_err(|e| QmpError::Protocol(format!("not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| QmpError::Protocol("not a JSON object".into()))?;
    let id = obj.get("id").and_then(Value::as_u64);
    if let Some(g) = obj.get("QMP") {
        return Ok(Message::Greeting(g.clone()));
    }
    if let Some(r) = obj.get("return") {
        return Ok(Message::Return {
            id,
            value: r.clone(),
        });
    }
    if let Some(e) = obj.get("error") {
        let field = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        return Ok(Message::Error {
            id,
            class: field("class"),
            desc: field("desc"),
        });
    }
    if let Some(name) = obj.get("event").and_then(Value::as_str) {
        let ts = obj.get("timestamp");
        let secs = ts
            .and_then(|t| t.get("seconds"))
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        let micros = ts
            .and_then(|t| t.get("microseconds"))
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        return Ok(Message::Event(QmpEvent {
            name: name.to_string(),
            data: obj.get("data").cloned().unwrap_or(Value::Null),
            timestamp: secs + micros / 1e6,
        }));
    }
    Err(QmpError::Protocol(format!(
        "unknown message {}",
        truncate(&v.to_string(), 200)
    )))
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

type Pending = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<Result<Value, QmpError>>>>>>;

/// A connected, negotiated QMP session.
pub struct QmpClient {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    next_id: AtomicU64,
    version: Value,
}

/// Default time a command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

impl QmpClient {
    /// Connects to a QMP socket, reads the greeting and enters command mode.
    /// Returns the client and the stream of events.
    pub async fn connect(
        path: &Path,
    ) -> Result<(Self, mpsc::UnboundedReceiver<QmpEvent>), QmpError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| QmpError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        let (read, write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let greeting = match read_message(&mut reader).await? {
            Some(Message::Greeting(g)) => g,
            Some(other) => {
                return Err(QmpError::Protocol(format!(
                    "expected greeting, got {other:?}"
                )))
            }
            None => return Err(QmpError::Disconnected),
        };
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        tokio::spawn(reader_task(reader, pending.clone(), events_tx));
        let client = QmpClient {
            writer: tokio::sync::Mutex::new(write),
            pending,
            next_id: AtomicU64::new(1),
            version: greeting.get("version").cloned().unwrap_or(Value::Null),
        };
        client.execute("qmp_capabilities", None).await?;
        Ok((client, events_rx))
    }

    /// QEMU's version object from the greeting.
    pub fn version(&self) -> &Value {
        &self.version
    }

    /// Runs a command and returns its `return` value.
    pub async fn execute(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        self.execute_timeout(command, arguments, COMMAND_TIMEOUT)
            .await
    }

    /// Runs a command with a time limit.
    pub async fn execute_timeout(
        &self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut guard = self.pending.lock().map_err(|_| QmpError::Disconnected)?;
            let map = guard.as_mut().ok_or(QmpError::Disconnected)?;
            map.insert(id, tx);
        }
        let mut msg = json!({"execute": command, "id": id});
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let mut line = msg.to_string();
        line.push('\n');
        {
            let mut w = self.writer.lock().await;
            w.write_all(line.as_bytes()).await.map_err(QmpError::Io)?;
        }
        let reply = tokio::time::timeout(timeout, rx)
            .await
            .map_err(|_| QmpError::Timeout {
                command: command.to_string(),
                secs: timeout.as_secs(),
            })?;
        match reply {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(QmpError::Command { class, desc, .. })) => Err(QmpError::Command {
                command: command.to_string(),
                class,
                desc,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(QmpError::Disconnected),
        }
    }

    /// The run state from `query-status` (`running`, `paused`, `shutdown`, ...).
    pub async fn run_state(&self) -> Result<String, QmpError> {
        let v = self.execute("query-status", None).await?;
        v.get("status")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| QmpError::Protocol(format!("query-status returned {v}")))
    }
}

async fn read_message(reader: &mut BufReader<OwnedReadHalf>) -> Result<Option<Message>, QmpError> {
    loop {
        let mut line = Vec::new();
        let n = (&mut *reader)
            .take(MAX_MESSAGE_BYTES)
            .read_until(b'\n', &mut line)
            .await
            .map_err(QmpError::Io)?;
        if n == 0 {
            return Ok(None);
        }
        if line.last() != Some(&b'\n') && n as u64 >= MAX_MESSAGE_BYTES {
            return Err(QmpError::Protocol(format!(
                "message over {MAX_MESSAGE_BYTES} bytes"
            )));
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        return decode(&line).map(Some);
    }
}

async fn reader_task(
    mut reader: BufReader<OwnedReadHalf>,
    pending: Pending,
    events: mpsc::UnboundedSender<QmpEvent>,
) {
    loop {
        let msg = match read_message(&mut reader).await {
            Ok(Some(m)) => m,
            Ok(None) => break,
            // A reset is how QEMU's exit often looks; only garbage is worth a warning.
            Err(QmpError::Io(e)) => {
                tracing::debug!("QMP connection ended: {e}");
                break;
            }
            Err(e) => {
                tracing::warn!("QMP: {e}; closing the connection");
                break;
            }
        };
        let (id, result) = match msg {
            Message::Event(ev) => {
                let _ = events.send(ev);
                continue;
            }
            Message::Return { id, value } => (id, Ok(value)),
            Message::Error { id, class, desc } => (
                id,
                Err(QmpError::Command {
                    command: String::new(),
                    class,
                    desc,
                }),
            ),
            Message::Greeting(_) => continue,
        };
        let waiter = id.and_then(|id| pending.lock().ok()?.as_mut()?.remove(&id));
        if let Some(tx) = waiter {
            let _ = tx.send(result);
        }
    }
    // Fail every waiting command and refuse new ones.
    if let Ok(mut guard) = pending.lock() {
        if let Some(map) = guard.take() {
            for (_, tx) in map {
                let _ = tx.send(Err(QmpError::Disconnected));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_kind_of_message() {
        assert!(matches!(
            decode(br#"{"QMP": {"version": {}, "capabilities": []}}"#),
            Ok(Message::Greeting(_))
        ));
        assert_eq!(
            decode(br#"{"return": {}, "id": 3}"#).unwrap(),
            Message::Return {
                id: Some(3),
                value: json!({})
            }
        );
        assert_eq!(
            decode(br#"{"error": {"class": "GenericError", "desc": "no"}, "id": 4}"#).unwrap(),
            Message::Error {
                id: Some(4),
                class: "GenericError".into(),
                desc: "no".into()
            }
        );
        let ev =
            decode(br#"{"event": "STOP", "timestamp": {"seconds": 10, "microseconds": 500000}}"#)
                .unwrap();
        assert_eq!(
            ev,
            Message::Event(QmpEvent {
                name: "STOP".into(),
                data: Value::Null,
                timestamp: 10.5
            })
        );
    }

    #[test]
    fn rejects_garbage_with_a_reason() {
        for bad in [
            &b"nope"[..],
            b"[1,2]",
            b"{\"what\": 1}",
            b"\xff\xfe",
            b"{\"event\": 5}",
        ] {
            assert!(matches!(decode(bad), Err(QmpError::Protocol(_))), "{bad:?}");
        }
    }
}

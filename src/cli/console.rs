//! Attaching a terminal (or a pipe) to a VM's serial console socket.

use nix::sys::termios;
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

/// Byte that detaches from the console: Ctrl-], as telnet and virsh use.
pub const DETACH_BYTE: u8 = 0x1d;

/// Why the console session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum AttachEnd {
    /// The user pressed Ctrl-].
    Detached,
    /// The VM closed the console (QEMU exited).
    Closed,
    /// The awaited text appeared.
    Seen,
    /// The time limit passed first.
    TimedOut,
}

/// How to attach.
pub struct AttachOptions {
    /// Forward our stdin to the guest (only when stdin is a terminal).
    pub interactive: bool,
    /// End as soon as this text appears in the output.
    pub until: Option<String>,
    /// End after this long.
    pub timeout: Option<Duration>,
}

impl AttachOptions {
    /// Interactive unless waiting for `until`; `timeout_secs` bounds it.
    pub fn waiting_for(until: Option<String>, timeout_secs: Option<u64>) -> Self {
        AttachOptions {
            interactive: until.is_none(),
            until,
            timeout: timeout_secs.map(Duration::from_secs),
        }
    }
}

/// Puts the terminal in raw mode and restores it when dropped.
struct RawMode {
    saved: termios::Termios,
}

impl RawMode {
    fn enter() -> Option<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), termios::SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(
            std::io::stdin().as_fd(),
            termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}

/// Connects to the console socket, retrying briefly while QEMU creates it.
pub async fn connect(path: &Path) -> std::io::Result<UnixStream> {
    let mut last = None;
    for _ in 0..200 {
        match UnixStream::connect(path).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("console socket never appeared")))
}

/// Copies the console to stdout (and stdin to the console) until it ends.
/// The stream is the console socket itself or a connection relayed by the
/// VM's host agent.
pub async fn attach<S>(stream: S, opts: AttachOptions) -> std::io::Result<AttachEnd>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let interactive = opts.interactive && std::io::stdin().is_terminal();
    let _raw = if interactive { RawMode::enter() } else { None };
    let (detach_tx, mut detach_rx) = tokio::sync::mpsc::channel::<()>(1);
    // Dropping a write half shuts the socket down for writing, which QEMU
    // takes as the client leaving: keep it alive even when we send nothing.
    let mut idle_writer = None;
    let input = if !interactive {
        idle_writer = Some(wr);
        None
    } else {
        Some(tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 256];
            while let Ok(n) = stdin.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if let Some(pos) = buf[..n].iter().position(|&b| b == DETACH_BYTE) {
                    let _ = wr.write_all(&buf[..pos]).await;
                    let _ = detach_tx.send(()).await;
                    break;
                }
                if wr.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }))
    };
    let deadline = opts.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut stdout = tokio::io::stdout();
    let mut buf = [0u8; 4096];
    let mut window: Vec<u8> = Vec::new();
    let mut seen_at: Option<tokio::time::Instant> = None;
    let end = loop {
        // Once the text is seen, wait at most a moment for the end of its line.
        let line_deadline = seen_at.map(|t| t + Duration::from_millis(500));
        let limit = match (deadline, line_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let sleep = async {
            match limit {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = rd.read(&mut buf) => {
                let n = r?;
                if n == 0 {
                    break AttachEnd::Closed;
                }
                stdout.write_all(&buf[..n]).await?;
                stdout.flush().await?;
                if seen_at.is_some() {
                    if buf[..n].contains(&b'\n') {
                        break AttachEnd::Seen;
                    }
                    continue;
                }
                if let Some(pat) = &opts.until {
                    window.extend_from_slice(&buf[..n]);
                    if let Some(pos) = window.windows(pat.len()).position(|w| w == pat.as_bytes()) {
                        // Finish the line the text is on, so scripts get all of it.
                        if window[pos..].contains(&b'\n') {
                            break AttachEnd::Seen;
                        }
                        seen_at = Some(tokio::time::Instant::now());
                        continue;
                    }
                    // Keep only a tail long enough to hold a pattern split across reads.
                    let keep = pat.len().max(1) - 1;
                    if window.len() > keep {
                        window.drain(..window.len() - keep);
                    }
                }
            }
            Some(()) = detach_rx.recv() => break AttachEnd::Detached,
            () = sleep => break if seen_at.is_some() { AttachEnd::Seen } else { AttachEnd::TimedOut },
        }
    };
    if let Some(task) = input {
        task.abort();
    }
    drop(idle_writer);
    // Detaching drops our write half, and QEMU answers by closing the
    // console; the loop may see that close before the detach signal.
    if end == AttachEnd::Closed && detach_rx.try_recv().is_ok() {
        return Ok(AttachEnd::Detached);
    }
    Ok(end)
}

//! Pseudo-terminals for `Start` with `pty`: the pair from `openpty`, the master side as async
//! reads and writes, and resizing. The child side is made the process's controlling terminal by
//! the exec shim (`exec_shim.rs`).

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::pty::{openpty, Winsize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use warren_agent::PtySize;

/// Size used when a request gives none (or zeros).
const DEFAULT_SIZE: PtySize = PtySize { cols: 80, rows: 24 };

fn clamp(size: PtySize) -> (u16, u16) {
    let size = if size.cols == 0 || size.rows == 0 {
        DEFAULT_SIZE
    } else {
        size
    };
    let c = |n: u32| u16::try_from(n).unwrap_or(u16::MAX);
    (c(size.cols), c(size.rows))
}

/// The agent's end of a pseudo-terminal, for input and resizing; output is read through the
/// [`tokio::net::unix::pipe::Receiver`] that [`open`] returns beside it. tokio's pipe types
/// accept any pollable descriptor, which gives async I/O on the master without `unsafe`.
pub struct PtyMaster {
    input: tokio::sync::Mutex<pipe::Sender>,
    control: OwnedFd,
}

fn cloexec(fd: &OwnedFd) -> nix::Result<()> {
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map(drop)
}

/// Opens a pseudo-terminal of `size`; returns the master (input, control), the master's output
/// and the child's side.
pub fn open(size: PtySize) -> std::io::Result<(PtyMaster, pipe::Receiver, OwnedFd)> {
    let (cols, rows) = clamp(size);
    let winsize = Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pair = openpty(Some(&winsize), None)?;
    // openpty's descriptors are inheritable: no other child may keep either end open, or the
    // master would never see the end of the terminal's output.
    cloexec(&pair.master)?;
    cloexec(&pair.slave)?;
    fcntl(
        pair.master.as_raw_fd(),
        FcntlArg::F_SETFL(OFlag::O_NONBLOCK),
    )?;
    let output = pipe::Receiver::from_owned_fd_unchecked(pair.master.try_clone()?)?;
    let input = pipe::Sender::from_owned_fd_unchecked(pair.master.try_clone()?)?;
    let master = PtyMaster {
        input: tokio::sync::Mutex::new(input),
        control: pair.master,
    };
    Ok((master, output, pair.slave))
}

/// Reads terminal output; 0 once every process has closed the terminal (Linux reports that as
/// EIO on the master).
pub async fn read(output: &mut pipe::Receiver, buf: &mut [u8]) -> std::io::Result<usize> {
    match output.read(buf).await {
        Err(e) if e.raw_os_error() == Some(Errno::EIO as i32) => Ok(0),
        other => other,
    }
}

impl PtyMaster {
    /// Writes all of `data` as terminal input.
    pub async fn write_all(&self, data: &[u8]) -> std::io::Result<()> {
        self.input.lock().await.write_all(data).await
    }

    /// Sets the terminal size; the kernel sends SIGWINCH to the foreground process group.
    pub fn resize(&self, size: PtySize) -> std::io::Result<()> {
        let (cols, rows) = clamp(size);
        let winsize = rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&self.control, winsize).map_err(std::io::Error::from)
    }
}

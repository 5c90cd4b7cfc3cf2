//! Making sure etcd and kube-apiserver never outlive the test process.
//!
//! Three layers, because no single one covers every way a test binary ends:
//!
//! 1. `Drop for ControlPlane` kills the children by PID and removes the state dir:
//!    covers normal ends and panics (unwinding) of a test owning a control plane.
//! 2. `libc::atexit` does the same for the process-wide [`crate::shared`] control
//!    plane, since Rust never drops statics; libtest leaves through `exit()` both on
//!    success and on failure, so atexit handlers run.
//! 3. `PR_SET_PDEATHSIG(SIGKILL)` in every child: the kernel kills it when its parent
//!    dies, even on SIGKILL of the test binary or `panic = "abort"`, where no code of
//!    ours runs. The catch is that Linux ties the death signal to the *thread* that
//!    forked, not the process: children spawned from a libtest worker thread would die
//!    as soon as that test finished. So all children are spawned from one dedicated
//!    thread that lives as long as the process.
//!
//! State dirs left behind by a killed process are swept by the next start
//! ([`sweep_stale`]): each dir is named after the PID that created it.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::OnceLock;

type Request = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` from the long-lived spawner thread with a parent-death signal set.
pub(crate) fn spawn(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("testbed-spawner".into())
            .spawn(move || {
                // Never returns while the process lives: the Sender sits in a static.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawning the testbed-spawner thread");
        tx
    });
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only calls the
    // async-signal-safe functions prctl, getppid and _exit.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.send((cmd, reply_tx))
        .map_err(|_| io::Error::other("testbed-spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("testbed-spawner thread is gone"))?
}

/// Kills a child by PID (SIGKILL) and reaps it; a no-op if it already exited.
pub(crate) fn kill(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Whether a process with this PID exists.
fn alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Removes state dirs `<root>/<pid>-<n>` whose creating process is gone.
pub(crate) fn sweep_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<libc::pid_t>().ok());
        if let Some(pid) = pid {
            if pid as u32 != std::process::id() && !alive(pid) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

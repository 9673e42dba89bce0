//! Signals to processes (Unix).

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Sends `sig` to process `pid`; true if it was delivered.
pub fn signal(pid: u32, sig: Signal) -> bool {
    i32::try_from(pid).is_ok_and(|p| p > 0 && kill(Pid::from_raw(p), sig).is_ok())
}

/// Sends `sig` to every process of the process group `pgid`; true if it was delivered.
pub fn signal_group(pgid: u32, sig: Signal) -> bool {
    i32::try_from(pgid).is_ok_and(|p| p > 1 && kill(Pid::from_raw(-p), sig).is_ok())
}

/// Restores the default disposition of SIGINT and SIGTERM (async-signal-safe, for `pre_exec`).
pub fn reset_signals() {
    use nix::sys::signal::{signal as set_handler, SigHandler};
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: SIG_DFL installs no handler code.
        let _ = unsafe { set_handler(sig, SigHandler::SigDfl) };
    }
}

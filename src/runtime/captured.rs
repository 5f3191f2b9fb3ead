//! Credential variables taken out of the process environment at start-up.
//!
//! A variable named by `auth.passphrase_env` or `auth.totp_secret_env`
//! (the TOTP seed) would otherwise stay in the
//! environment for the life of the process: every child inherits it, and
//! `/proc/<pid>/environ` shows it to whoever may read that file. `main`
//! captures it while the process still has one thread: the value moves here
//! (zeroized when dropped), the variable leaves the environment, and its
//! `NAME=value` bytes in the environment block the kernel set up at `exec`
//! (which is what `/proc/<pid>/environ` reads) are overwritten.
//!
//! A variable first named later, by a config reload, cannot be removed:
//! with the runtime's threads running, `std::env::remove_var` is unsound.
//! It is read from the environment each time, and only its name is kept
//! here, so that children are still kept from it.

use std::ffi::{CStr, c_char};
use std::sync::Mutex;

use zeroize::{Zeroize, Zeroizing};

struct Captured {
    /// Every variable used for a passphrase so far, captured or not.
    names: Vec<String>,
    values: Vec<(String, Zeroizing<Vec<u8>>)>,
}

static CAPTURED: Mutex<Captured> = Mutex::new(Captured {
    names: Vec::new(),
    values: Vec::new(),
});

unsafe extern "C" {
    /// POSIX's process environment; declared here rather than through the
    /// `libc` crate, which exposes it for glibc only.
    static mut environ: *mut *mut c_char;
}

/// Moves the variable `name` out of the environment into this process-wide
/// holder, and overwrites its bytes in the initial environment block. An
/// unset variable is left to [`super::Auth::read_passphrase`] to report.
///
/// # Safety
///
/// No other thread may exist: this calls `std::env::remove_var` and writes
/// to memory the environment points to.
pub unsafe fn capture_passphrase_env(name: &str) {
    // Names that `remove_var` would panic on cannot be set anyway.
    if name.is_empty() || name.contains(['=', '\0']) {
        return;
    }
    let Some(value) = std::env::var_os(name) else {
        return;
    };
    // SAFETY: single-threaded, per this function's contract.
    let entries = unsafe { entries_named(name) };
    // SAFETY: single-threaded, per this function's contract.
    unsafe { std::env::remove_var(name) };
    if let Some(block) = initial_env_block() {
        for (ptr, len) in entries {
            let start = ptr as usize;
            // Only bytes the kernel placed at exec: a string set later by
            // `setenv` belongs to the C library, which may still use it.
            if block.0 <= start && start + len < block.1 {
                // SAFETY: `len` bytes at `ptr` are the entry's string, read
                // just before; no longer referenced by the environment
                // (removed above), by Rust code (no reference was kept) or
                // by any other thread (there is none).
                unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>(), len) }.zeroize();
            }
        }
    }
    let mut held = CAPTURED.lock().expect("not poisoned");
    held.values
        .push((name.to_owned(), Zeroizing::new(value.into_encoded_bytes())));
    if !held.names.iter().any(|n| n == name) {
        held.names.push(name.to_owned());
    }
}

/// The captured value of `name`, if `name` was captured.
pub(crate) fn value(name: &str) -> Option<Zeroizing<Vec<u8>>> {
    let held = CAPTURED.lock().expect("not poisoned");
    held.values
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// Records `name`, read from the environment without being captured, so
/// that children are kept from it too.
pub(crate) fn note(name: &str) {
    let mut held = CAPTURED.lock().expect("not poisoned");
    if !held.names.iter().any(|n| n == name) {
        held.names.push(name.to_owned());
    }
}

/// Every variable used for a passphrase so far: children must not get them.
pub fn names() -> Vec<String> {
    CAPTURED.lock().expect("not poisoned").names.clone()
}

/// Where the `NAME=value` strings for `name` are, with their lengths.
///
/// # Safety
///
/// No other thread may change the environment meanwhile.
unsafe fn entries_named(name: &str) -> Vec<(*mut c_char, usize)> {
    let mut found = Vec::new();
    // SAFETY: reads the pointer value; no reference to the static is made.
    let mut entry = unsafe { std::ptr::addr_of!(environ).read() };
    if entry.is_null() {
        return found;
    }
    // SAFETY: `environ` is a null-terminated array of C strings, unchanged
    // while we walk it (caller's contract).
    unsafe {
        while !(*entry).is_null() {
            let bytes = CStr::from_ptr(*entry).to_bytes();
            if bytes.len() > name.len()
                && bytes.starts_with(name.as_bytes())
                && bytes[name.len()] == b'='
            {
                found.push((*entry, bytes.len()));
            }
            entry = entry.add(1);
        }
    }
    found
}

/// The address range of the environment strings the kernel set up at
/// `exec` (`env_start` and `env_end`, fields 50 and 51 of
/// `/proc/self/stat`), if `/proc` can tell.
fn initial_env_block() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces and parentheses: count
    // from the last ')', after which field 3 comes.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let start: usize = fields.get(50 - 3)?.parse().ok()?;
    let end: usize = fields.get(51 - 3)?.parse().ok()?;
    (start < end).then_some((start, end))
}

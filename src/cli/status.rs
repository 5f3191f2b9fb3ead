//! `passbolt-sync status`: the running daemon's status file as a table.

use std::io::Write;
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use crate::agent::status::{
    RotationState, StatusError, StatusReport, TargetState, file_for, read_file,
};

/// `passbolt-sync status`: reads the status file and prints it.
pub fn command(
    config: Option<&crate::config::Config>,
    out: &mut dyn Write,
) -> Result<bool, StatusError> {
    let path = file_for(config)?;
    let report = read_file(&path)?;
    print(&report, out).map_err(|source| StatusError::Read {
        path: PathBuf::from("standard output"),
        source,
    })
}

/// Whether the process that wrote the file still runs. `None` when that
/// cannot be told (another PID namespace answers "no such process" too,
/// but a monitoring check runs beside the daemon).
fn writer_alive(pid: u32) -> Option<bool> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).ok()?);
    match nix::sys::signal::kill(pid, None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => Some(true),
        Err(nix::errno::Errno::ESRCH) => Some(false),
        Err(_) => None,
    }
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "never".into())
}

/// `passbolt-sync status`: the status file as a table. `Ok(true)` when
/// every target is current (or removed as its `on_missing` says) and the
/// daemon that wrote it still runs.
pub fn print(report: &StatusReport, out: &mut dyn Write) -> std::io::Result<bool> {
    let alive = writer_alive(report.pid);
    writeln!(
        out,
        "status written {} UTC by passbolt-sync PID {}{}",
        report.written_at.format("%Y-%m-%d %H:%M:%S"),
        report.pid,
        match alive {
            Some(false) => " (no longer running: this status is stale)",
            _ => "",
        }
    )?;
    if !report.first_sync_done {
        writeln!(out, "the first complete sync has not finished")?;
    }
    let rows: Vec<[String; 5]> = report
        .targets
        .iter()
        .map(|t| {
            let result = match (t.last_result, &t.reason) {
                (None, _) => "pending".to_string(),
                (Some(r), None) => r.as_str().to_string(),
                (Some(r), Some(why)) => format!("{}: {why}", r.as_str()),
            };
            [
                t.path.display().to_string(),
                t.format.clone(),
                when(t.last_success),
                when(t.next_tick),
                result,
            ]
        })
        .collect();
    let header = [
        "TARGET",
        "FORMAT",
        "LAST SUCCESS (UTC)",
        "NEXT TICK (UTC)",
        "LAST RESULT",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5], out: &mut dyn Write| -> std::io::Result<()> {
        // The last column is not padded: it holds the reason.
        writeln!(
            out,
            "{:w0$}  {:w1$}  {:w2$}  {:w3$}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
        )
    };
    line(header, out)?;
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3], &row[4]], out)?;
    }
    if !report.rotations.is_empty() {
        writeln!(out)?;
        print_rotations(&report.rotations, out)?;
    }
    let current = report.first_sync_done
        && alive != Some(false)
        && report.targets.iter().all(TargetState::is_current)
        && report.rotations.iter().all(RotationState::is_ok);
    Ok(current)
}

/// The rotations as a second table: ids and fields, times, results.
fn print_rotations(rotations: &[RotationState], out: &mut dyn Write) -> std::io::Result<()> {
    let header = [
        "ROTATION",
        "LAST SUCCESS (UTC)",
        "NEXT DUE (UTC)",
        "LAST RESULT",
    ];
    let rows: Vec<[String; 4]> = rotations
        .iter()
        .map(|r| {
            let result = match (r.last_result, &r.reason) {
                (None, _) => "not attempted yet".to_string(),
                (Some(res), None) => res.as_str().to_string(),
                (Some(res), Some(why)) => format!("{}: {why}", res.as_str()),
            };
            let next = match r.next_due {
                Some(t) => when(Some(t)),
                None => "unknown".into(),
            };
            [
                format!("{}/{}", r.resource_id, r.field),
                when(r.last_success),
                next,
                result,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 4], out: &mut dyn Write| -> std::io::Result<()> {
        writeln!(
            out,
            "{:w0$}  {:w1$}  {:w2$}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
        )
    };
    line(header, out)?;
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3]], out)?;
    }
    Ok(())
}

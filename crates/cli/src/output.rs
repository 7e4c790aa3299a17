//! Printing results for people and programs, and progress bars.

/// Prints a line on stdout. A reader that has gone away (`vmhub … | head`) ends
/// the program quietly instead of with a panic.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))
    };
}

/// Writes one line to stdout; see [`out!`].
pub fn write_line(args: std::fmt::Arguments) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(args).and_then(|_| o.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("vmhub: error: writing to standard output: {e}");
        std::process::exit(1);
    }
}

use crate::img::Output;
use crate::size::human;
use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use std::io::IsTerminal;
use vdisk::ops::check::CheckReport;
use vdisk::{Extent, ExtentKind, ImageInfo};

/// Prints `img info`.
pub fn print_info(info: &ImageInfo, output: Output) -> Result<()> {
    let v = serde_json::to_value(info)?;
    match output {
        Output::Json => out!("{}", serde_json::to_string_pretty(&v)?),
        Output::Human => print_value(&v, 0),
    }
    Ok(())
}

fn print_value(v: &Value, indent: usize) {
    let Value::Object(map) = v else { return };
    let pad = " ".repeat(indent);
    for (k, val) in map {
        match val {
            Value::Null => {}
            Value::Object(_) => {
                out!("{pad}{k}:");
                print_value(val, indent + 2);
            }
            Value::Array(items) => {
                out!("{pad}{k}:");
                for i in items {
                    out!("{pad}  - {}", scalar(i));
                }
            }
            Value::Number(n) if k.ends_with("size") || k.ends_with("bytes") => match n.as_u64() {
                Some(b) => out!("{pad}{k}: {} ({b} bytes)", human(b)),
                None => out!("{pad}{k}: {n}"),
            },
            _ => out!("{pad}{k}: {}", scalar(val)),
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints `img check`.
pub fn print_check(r: &CheckReport, output: Output) {
    match output {
        Output::Json => match serde_json::to_string_pretty(r) {
            Ok(s) => out!("{s}"),
            Err(e) => eprintln!("vmhub: error: {e}"),
        },
        Output::Human => {
            for p in &r.problems {
                out!("ERROR {}: {}", p.structure, p.message);
            }
            for n in &r.notes {
                out!("note: {n}");
            }
            if r.clean {
                out!("No errors were found on the image.");
            } else {
                out!("{} errors were found on the image.", r.problems.len());
            }
        }
    }
}

/// Prints `img map`.
pub fn print_map(extents: &[Extent], output: Output) -> Result<()> {
    match output {
        Output::Json => out!("{}", serde_json::to_string_pretty(extents)?),
        Output::Human => {
            out!("{:<20}{:<20}Kind", "Offset", "Length");
            for e in extents {
                let kind = match e.kind {
                    ExtentKind::Data => "data",
                    ExtentKind::Zero => "zero",
                    ExtentKind::Unallocated => "unallocated",
                };
                out!(
                    "{:<20}{:<20}{kind}",
                    format!("0x{:x}", e.offset),
                    format!("0x{:x}", e.length)
                );
            }
        }
    }
    Ok(())
}

/// Progress on stderr: a bar on a terminal; with `--progress` and no terminal
/// (a log file, a CI job), a line at every tenth of the way.
pub struct Progress {
    bar: Option<ProgressBar>,
    what: String,
    lines: bool,
    /// The last tenth reported as a line.
    tenth: u64,
}

impl Progress {
    /// Progress of `what`; shown when stderr is a terminal, or when `forced`.
    pub fn new(forced: bool, what: &str) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let mut p = Progress {
            bar: None,
            what: what.to_string(),
            lines: forced && !terminal,
            tenth: 0,
        };
        if terminal {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(what.to_string());
            p.bar = Some(bar);
        }
        p
    }

    /// Reports `done` of `total` bytes.
    pub fn set(&mut self, done: u64, total: u64) {
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_position(done);
        }
        if self.lines && total > 0 {
            let tenth = (u128::from(done) * 10 / u128::from(total)) as u64;
            if tenth > self.tenth {
                self.tenth = tenth;
                eprintln!(
                    "{}: {}% ({} of {})",
                    self.what,
                    tenth * 10,
                    human(done),
                    human(total)
                );
            }
        }
    }

    /// Ends the bar.
    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish();
        }
    }
}

//! `secmon-client [--json] PATH`: prints the events of a secmon agent's local socket
//! until the agent closes it.

use std::path::PathBuf;
use std::process::ExitCode;

use secmon_client::{Output, follow};

const USAGE: &str = "\
usage: secmon-client [--json] PATH

Prints the events of the secmon agent's local event socket ([socket] path in the
agent's config, e.g. /run/secmon/agent.sock), one line each, until the agent closes
it.

options:
  --json         print the agent's JSON lines unchanged (for jq and scripts)
  -h, --help     print this help
  -V, --version  print the version";

fn main() -> ExitCode {
    let mut output = Output::Pretty;
    let mut path: Option<PathBuf> = None;
    for arg in std::env::args_os().skip(1) {
        match arg.to_str() {
            Some("--json") => output = Output::Json,
            Some("-h" | "--help") => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            Some("-V" | "--version") => {
                println!("secmon-client {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            Some(s) if s.starts_with('-') && s.len() > 1 => return usage(&format!("unknown option {s}")),
            _ if path.is_some() => return usage("more than one PATH"),
            _ => path = Some(PathBuf::from(arg)),
        }
    }
    let Some(path) = path else { return usage("PATH is missing") };
    match follow(&path, output, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("secmon-client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("secmon-client: {problem}\n\n{USAGE}");
    ExitCode::from(2)
}

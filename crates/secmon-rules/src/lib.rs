//! secmon's rule engine: SigmaHQ rules, parsed and evaluated by
//! [rsigma](https://docs.rs/rsigma-eval/0.23.0), over secmon envelopes.
//!
//! - [`RuleSet::load`] reads `*.yml` / `*.yaml` files under directories; each rule
//!   that cannot be used (parse or compile error, a logsource or field secmon never
//!   produces, a correlation over rules that did not load) is reported as a
//!   [`LoadProblem`] and skipped.
//! - [`Engine::evaluate`] maps an [`secmon_proto::Envelope`] through the
//!   [`mapping`] table, runs the detection rules whose logsource fits the event and
//!   feeds the matches to the correlation rules (`event_count`, `value_count`,
//!   `temporal`, ...). Correlation state is bounded by [`Limits`].
//!
//! # Field mapping
//!
//! Sigma events are the envelope's JSON (`class`, `activity`, `severity`,
//! `agent_id`, `payload.*` ... usable in any rule) plus these Sigma names
//! (product `linux` for all):
//!
//! | Logsource | Envelopes | Sigma field ← envelope path |
//! |---|---|---|
//! | `category: process_creation` | class `process`, activity `started` | `Image` ← `payload.exe`, `CommandLine` ← `payload.cmdline`, `ParentImage` ← `payload.parent.exe`, `ParentCommandLine` ← `payload.parent.cmdline`, `User` ← `payload.user`, `CurrentDirectory` ← `payload.cwd`, `ProcessId` ← `payload.pid`, `ParentProcessId` ← `payload.ppid`, `LogonId` ← `payload.login_uid` |
//! | `category: file_event` | class `file`, activities `created`, `modified`, `renamed` | `TargetFilename` ← `payload.path`, `SourceFilename` ← `payload.old_path`, `Image` ← `payload.process.exe`, `CommandLine` ← `payload.process.cmdline`, `User` ← `payload.process.user`, `ProcessId` ← `payload.process.pid` |
//! | `category: file_delete` | class `file`, activity `deleted` | as `file_event`, without `SourceFilename` |
//! | `category: network_connection` | class `network`, activities `connected` (outbound), `accepted` (inbound) | `DestinationIp` ← `payload.dst_ip`, `DestinationPort` ← `payload.dst_port`, `DestinationHostname` ← `payload.dst_host`, `SourceIp` ← `payload.src_ip`, `SourcePort` ← `payload.src_port`, `Protocol` ← `payload.protocol`, `Initiated` ← `payload.initiated` (bool), `Image` ← `payload.process.exe`, `CommandLine` ← `payload.process.cmdline`, `User` ← `payload.process.user`, `ProcessId` ← `payload.process.pid` |
//! | `service: <s>` (no category) | class `log` (`LogRecord`) | `message`, `raw`, `program`, `host`, `pid` ← `payload.*`; each decoded field (`payload.fields.user`, `src_ip`, ...) under its own name; keyword detections search `message` and `raw` only |
//!
//! Every `file` class event (any activity, also those no category covers, such as
//! `attributes_changed`) also carries booleans Sigma could not compute itself:
//! `payload.after.setuid` / `payload.after.setgid` (mode bits 0o4000 / 0o2000 after
//! the change) and `payload.shrunk` (size after < size before), each only when the
//! states it needs are in the event. Envelopes of classes the table lacks (`device`,
//! `agent`, file `attributes_changed` / `accessed`) reach rules whose logsource names
//! no category or service (just `product: linux`), through their native fields.
//!
//! Log services: the lower-cased program and decoder name, plus `sshd` ← sshd,
//! `sudo`, `su`, `cron` ← cron/crond/anacron, `clamav` ← clamd/freshclam/clamscan,
//! `guacamole` ← guacd, `vsftpd`, `useradd`, `usermod`, `passwd`, `systemd`;
//! `syslog` for every line with a syslog header; `auth` for sshd, sudo, su, login,
//! passwd, user/group tools, systemd-logind and lines from `auth.log` / `secure`.
//! A rule naming another service, another product, or a category not in the table,
//! or (for the categories above) a field not in the table, is reported unsupported:
//! it could never match. Keyword rules only see log lines.

pub mod cases;
pub mod engine;
mod event;
pub mod load;
pub mod mapping;

pub use engine::{Engine, Limits, Logsource, Match, RuleStat};
pub use load::{LoadProblem, LoadedCorrelation, LoadedRule, RuleSet};

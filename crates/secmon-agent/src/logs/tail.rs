//! Follows one log file by polling: new lines in order, through rotation by rename
//! (the old file is read to its end, then the new one from its start) and by
//! copytruncate (the file shrinks, or its first bytes change: read again from 0).
//!
//! The offset handed out for saving counts only lines already given to the caller,
//! so a crash repeats at most the lines emitted since the last save, never skips one.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::position::{FINGERPRINT_BYTES, Position, fingerprint};
use crate::config::StartAt;

/// Bytes read per `read_at` call.
const CHUNK: usize = 64 * 1024;
/// Most bytes read from one file in one poll, so a large backlog does not hold up
/// the other files or the saving of positions.
const POLL_BUDGET: u64 = 8 * 1024 * 1024;

/// A line as read: lossy UTF-8, without its newline, cut to the line limit.
pub struct Line<'a> {
    pub text: &'a str,
    pub cut: bool,
}

struct Open {
    file: File,
    dev: u64,
    inode: u64,
    /// Bytes read into `partial` (or skipped) so far.
    read_pos: u64,
    /// Bytes whose lines were handed out: the position to save.
    offset: u64,
    /// The fingerprinted prefix: its length and CRC-32.
    fp_len: u64,
    fp_crc: u32,
    /// The file was renamed away (or is the rotated copy found at start): read it to
    /// its end, then follow the path again.
    draining: bool,
}

/// One followed file.
pub struct Tailer {
    path: PathBuf,
    open: Option<Open>,
    /// The position saved by the last run; used at the first open only.
    saved: Option<Position>,
    first_open: bool,
    start_at: StartAt,
    max_line: usize,
    /// A line not ended yet.
    partial: Vec<u8>,
    /// A cut line's rest is being dropped up to its newline.
    skipping: bool,
    pub lines: u64,
    pub cut: u64,
    /// The current failure (open or read), shown in status; None when reading.
    pub error: Option<String>,
    missing_logged: bool,
}

/// What a poll did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Polled {
    /// Lines handed out (the position moved).
    pub lines: u64,
    /// The callback refused a line: the agent is stopping.
    pub stopped: bool,
    /// The read budget ran out before the end of the file: poll again soon.
    pub more: bool,
}

impl Tailer {
    pub fn new(path: PathBuf, saved: Option<Position>, start_at: StartAt, max_line: usize) -> Self {
        Tailer {
            path,
            open: None,
            saved,
            first_open: true,
            start_at,
            max_line,
            partial: Vec::new(),
            skipping: false,
            lines: 0,
            cut: 0,
            error: None,
            missing_logged: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The position to save, when a file is open.
    pub fn position(&self) -> Option<Position> {
        self.open.as_ref().filter(|o| !o.draining).map(|o| Position {
            dev: o.dev,
            inode: o.inode,
            offset: o.offset,
            fp_len: o.fp_len,
            fp_crc: o.fp_crc,
        })
    }

    /// Opens the file and settles where reading starts (saved position, end or
    /// start), so lines written from now on are read even if they come before the
    /// first poll. Errors are left for the poll to report.
    pub fn prime(&mut self) {
        if self.open.is_none() {
            let _ = self.open_path();
        }
    }

    /// Reads what is new and hands each complete line to `emit`, which returns false
    /// when the agent is stopping. An error leaves the tailer ready to retry.
    pub fn poll(&mut self, emit: &mut dyn FnMut(Line<'_>) -> bool) -> io::Result<Polled> {
        let mut polled = Polled::default();
        // At most a few switches per poll: draining a rotated file, then the new one.
        for _ in 0..3 {
            if self.open.is_none() && !self.open_path()? {
                return Ok(polled);
            }
            let got = self.read_new(emit)?;
            polled.lines += got.lines;
            if got.stopped || got.more {
                polled.stopped = got.stopped;
                polled.more = got.more;
                return Ok(polled);
            }
            if !self.check_rotation(got.lines > 0, emit, &mut polled)? {
                return Ok(polled);
            }
            if polled.stopped {
                return Ok(polled);
            }
        }
        Ok(polled)
    }

    /// Opens the path; false when it does not exist (yet).
    fn open_path(&mut self) -> io::Result<bool> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Not there at the start: when it appears, all of it is new.
                self.first_open = false;
                if !self.missing_logged {
                    tracing::debug!(path = %self.path.display(), "log file not there (yet); watching for it");
                    self.missing_logged = true;
                }
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        self.missing_logged = false;
        let first = std::mem::replace(&mut self.first_open, false);
        let mut open = Open {
            file,
            dev: meta.dev(),
            inode: meta.ino(),
            read_pos: 0,
            offset: 0,
            fp_len: 0,
            fp_crc: 0,
            draining: false,
        };
        let saved = self.saved.take().filter(|_| first);
        match saved {
            Some(p) if same_file(&open.file, meta.dev(), meta.ino(), meta.len(), &p)? => {
                open.read_pos = p.offset;
                open.offset = p.offset;
            }
            Some(p) => {
                // Rotated while the agent was down: finish the rotated copy first when
                // it is where logrotate puts it.
                if let Some(old) = self.rotated_copy(&p)? {
                    tracing::info!(path = %self.path.display(), "log rotated while the agent was down; reading the rest of the old file first");
                    self.open = Some(old);
                    return Ok(true);
                }
            }
            None if first && self.start_at == StartAt::End => {
                let start = start_of_last_line(&open.file, meta.len(), self.max_line)?;
                open.read_pos = start;
                open.offset = start;
            }
            None => {}
        }
        tracing::debug!(path = %self.path.display(), offset = open.offset, inode = open.inode, "following log file");
        self.open = Some(open);
        refresh_fingerprint(self.open.as_mut().expect("just set"))?;
        Ok(true)
    }

    /// `<path>.1`, when it is the file of the saved position.
    fn rotated_copy(&self, p: &Position) -> io::Result<Option<Open>> {
        let Ok(file) = File::open(rotated_name(&self.path)) else { return Ok(None) };
        let meta = file.metadata()?;
        if !same_file(&file, meta.dev(), meta.ino(), meta.len(), p)? {
            return Ok(None);
        }
        Ok(Some(Open {
            file,
            dev: p.dev,
            inode: p.inode,
            read_pos: p.offset,
            offset: p.offset,
            fp_len: p.fp_len,
            fp_crc: p.fp_crc,
            draining: true,
        }))
    }

    /// Reads from the open file up to its end.
    fn read_new(&mut self, emit: &mut dyn FnMut(Line<'_>) -> bool) -> io::Result<Polled> {
        let mut polled = Polled::default();
        let o = self.open.as_mut().expect("open");
        let size = o.file.metadata()?.len();
        let rewritten = size < o.read_pos
            || (o.fp_len > 0
                && (size != o.read_pos || o.fp_len < FINGERPRINT_BYTES)
                && fingerprint(&o.file, o.fp_len)? != Some(o.fp_crc));
        if rewritten {
            tracing::info!(path = %self.path.display(), size, was = o.read_pos, "log file truncated or rewritten; reading it from the start");
            // copytruncate: the lines written since the last poll are in the copy.
            if let Some(copy) = self.truncated_copy()? {
                let current = self.open.replace(copy).expect("open");
                let finished =
                    self.read_loop(emit, &mut polled, u64::MAX)? && self.finish_partial(emit, &mut polled);
                self.open = Some(current);
                if !finished {
                    polled.stopped = true;
                    return Ok(polled);
                }
            }
            let o = self.open.as_mut().expect("open");
            o.read_pos = 0;
            o.offset = 0;
            o.fp_len = 0;
            self.partial.clear();
            self.skipping = false;
        }
        if !self.read_loop(emit, &mut polled, POLL_BUDGET)? {
            polled.stopped = true;
            return Ok(polled);
        }
        refresh_fingerprint(self.open.as_mut().expect("open"))?;
        Ok(polled)
    }

    /// `<path>.1` when it starts like the open file did and holds more than was read:
    /// the copy `copytruncate` made, opened where reading stopped.
    fn truncated_copy(&self) -> io::Result<Option<Open>> {
        let o = self.open.as_ref().expect("open");
        if o.fp_len == 0 {
            return Ok(None);
        }
        let Ok(file) = File::open(rotated_name(&self.path)) else { return Ok(None) };
        let meta = file.metadata()?;
        if meta.len() <= o.read_pos || fingerprint(&file, o.fp_len)? != Some(o.fp_crc) {
            return Ok(None);
        }
        Ok(Some(Open { file, dev: meta.dev(), inode: meta.ino(), draining: true, ..*o }))
    }

    /// Reads the open file from `read_pos` to its end, or `budget` bytes (then sets
    /// `polled.more`); false when `emit` refused a line.
    fn read_loop(
        &mut self,
        emit: &mut dyn FnMut(Line<'_>) -> bool,
        polled: &mut Polled,
        budget: u64,
    ) -> io::Result<bool> {
        let mut buf = vec![0u8; CHUNK];
        let mut read = 0u64;
        loop {
            if read >= budget {
                polled.more = true;
                return Ok(true);
            }
            let o = self.open.as_mut().expect("open");
            let n = o.file.read_at(&mut buf, o.read_pos)?;
            if n == 0 {
                return Ok(true);
            }
            o.read_pos += n as u64;
            read += n as u64;
            let base = o.read_pos - n as u64;
            if !self.feed(&buf[..n], base, emit, polled) {
                return Ok(false);
            }
        }
    }

    /// Hands out the unterminated last line of a finished (rotated) file.
    fn finish_partial(&mut self, emit: &mut dyn FnMut(Line<'_>) -> bool, polled: &mut Polled) -> bool {
        let skipping = std::mem::replace(&mut self.skipping, false);
        let line = std::mem::take(&mut self.partial);
        if skipping || line.is_empty() {
            return true;
        }
        let end = self.open.as_ref().expect("open").read_pos;
        self.hand_out(&line, false, end, emit, polled)
    }

    /// Splits `data` (read at file offset `base`) into lines. False when `emit`
    /// refused one.
    fn feed(
        &mut self,
        data: &[u8],
        base: u64,
        emit: &mut dyn FnMut(Line<'_>) -> bool,
        polled: &mut Polled,
    ) -> bool {
        let mut start = 0;
        while start < data.len() {
            let Some(nl) = data[start..].iter().position(|&b| b == b'\n') else {
                if !self.skipping {
                    self.partial.extend_from_slice(&data[start..]);
                    if self.partial.len() > self.max_line {
                        let end = base + data.len() as u64;
                        let mut line = std::mem::take(&mut self.partial);
                        line.truncate(self.max_line);
                        if !self.hand_out(&line, true, end, emit, polled) {
                            return false;
                        }
                        self.skipping = true;
                    }
                }
                return true;
            };
            let end = base + (start + nl + 1) as u64;
            if self.skipping {
                self.skipping = false;
                self.open.as_mut().expect("open").offset = end;
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&data[start..start + nl]);
                let cut = line.len() > self.max_line;
                line.truncate(self.max_line);
                if !self.hand_out(&line, cut, end, emit, polled) {
                    return false;
                }
            }
            start += nl + 1;
        }
        true
    }

    fn hand_out(
        &mut self,
        line: &[u8],
        cut: bool,
        end: u64,
        emit: &mut dyn FnMut(Line<'_>) -> bool,
        polled: &mut Polled,
    ) -> bool {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.is_empty() {
            let text = String::from_utf8_lossy(line);
            if !emit(Line { text: &text, cut }) {
                return false;
            }
            self.lines += 1;
            polled.lines += 1;
            if cut {
                self.cut += 1;
            }
        }
        self.open.as_mut().expect("open").offset = end;
        true
    }

    /// Checks whether the path now names another file. True when the tailer let go
    /// of the open file and should open the path again.
    fn check_rotation(
        &mut self,
        got_lines: bool,
        emit: &mut dyn FnMut(Line<'_>) -> bool,
        polled: &mut Polled,
    ) -> io::Result<bool> {
        let o = self.open.as_mut().expect("open");
        let moved = match std::fs::metadata(&self.path) {
            Ok(m) => (m.dev(), m.ino()) != (o.dev, o.inode),
            // Renamed away and nothing new there yet: keep reading the old file.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                o.draining = true;
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        if !moved {
            o.draining = false;
            return Ok(false);
        }
        o.draining = true;
        // A writer may still append to the renamed file until it reopens the path:
        // switch once a poll found nothing new in it.
        if got_lines {
            return Ok(false);
        }
        if !self.finish_partial(emit, polled) {
            polled.stopped = true;
            return Ok(false);
        }
        tracing::info!(path = %self.path.display(), "log file rotated; following the new file from its start");
        self.open = None;
        Ok(true)
    }
}

/// Where logrotate puts the previous file: `<path>.1`.
fn rotated_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".1");
    path.with_file_name(name)
}

/// Where the line being written at the end of the file starts (the end itself when
/// the file ends with a newline): starting "at the end" must not start mid-line.
fn start_of_last_line(file: &File, size: u64, max_line: usize) -> io::Result<u64> {
    let from = size.saturating_sub(max_line as u64);
    let mut buf = vec![0u8; (size - from) as usize];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], from + got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    Ok(match buf[..got].iter().rposition(|&b| b == b'\n') {
        Some(i) => from + i as u64 + 1,
        // No newline in reach: a line too long to keep whole anyway, or a one-line file.
        None if from == 0 => 0,
        None => size,
    })
}

/// True when the open file is the one `p` describes.
fn same_file(file: &File, dev: u64, inode: u64, size: u64, p: &Position) -> io::Result<bool> {
    Ok(dev == p.dev
        && inode == p.inode
        && size >= p.offset
        && (p.fp_len == 0 || fingerprint(file, p.fp_len)? == Some(p.fp_crc)))
}

/// Fingerprints up to [`FINGERPRINT_BYTES`] of the start while the file is young.
fn refresh_fingerprint(o: &mut Open) -> io::Result<()> {
    if o.fp_len < FINGERPRINT_BYTES {
        let len = o.read_pos.min(FINGERPRINT_BYTES);
        if len > o.fp_len
            && let Some(crc) = fingerprint(&o.file, len)?
        {
            o.fp_len = len;
            o.fp_crc = crc;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn append(path: &Path, text: &[u8]) {
        std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(text).unwrap();
    }

    fn poll(t: &mut Tailer) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        t.poll(&mut |l: Line<'_>| {
            out.push((l.text.to_owned(), l.cut));
            true
        })
        .unwrap();
        out
    }

    fn texts(v: Vec<(String, bool)>) -> Vec<String> {
        v.into_iter().map(|(t, _)| t).collect()
    }

    #[test]
    fn a_renamed_file_is_read_to_its_end_and_its_unended_last_line_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        append(&p, b"");
        let mut t = Tailer::new(p.clone(), None, StartAt::End, 100);
        t.prime();
        append(&p, b"a\r\n\nb\n");
        assert_eq!(texts(poll(&mut t)), ["a", "b"], "CR stripped, empty lines skipped");
        append(&p, b"c\nunended");
        std::fs::rename(&p, dir.path().join("log.1")).unwrap();
        // Renamed, no new file yet: the old one is still read.
        assert_eq!(texts(poll(&mut t)), ["c"]);
        append(&dir.path().join("log.1"), b" still");
        assert!(poll(&mut t).is_empty());
        append(&p, b"new\n");
        assert_eq!(texts(poll(&mut t)), ["unended still", "new"]);
        assert_eq!(t.lines, 5);
        assert_eq!(t.position().unwrap().offset, 4);
    }

    #[test]
    fn starting_at_the_end_keeps_the_line_being_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        append(&p, b"old\nhalf a ");
        let mut t = Tailer::new(p.clone(), None, StartAt::End, 100);
        t.prime();
        append(&p, b"line\nnext\n");
        assert_eq!(texts(poll(&mut t)), ["half a line", "next"]);
    }

    #[test]
    fn a_refused_line_is_not_counted_as_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        append(&p, b"one\ntwo\n");
        let mut t = Tailer::new(p, None, StartAt::Beginning, 100);
        let mut n = 0;
        let polled = t
            .poll(&mut |_| {
                n += 1;
                n < 2
            })
            .unwrap();
        assert!(polled.stopped);
        assert_eq!(t.position().unwrap().offset, 4, "only the line taken counts");
    }

    #[test]
    fn overlong_lines_are_cut_across_reads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        append(&p, b"");
        let mut t = Tailer::new(p.clone(), None, StartAt::End, 300);
        t.prime();
        append(&p, &[b'x'; 200]);
        assert!(poll(&mut t).is_empty());
        append(&p, &[b'y'; 200]);
        let got = poll(&mut t);
        assert_eq!(got.len(), 1);
        assert!(got[0].1 && got[0].0.len() == 300);
        append(&p, b"zzz\nok\n");
        assert_eq!(texts(poll(&mut t)), ["ok"]);
        assert_eq!(t.cut, 1);
    }
}

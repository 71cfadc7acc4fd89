//! Line protocols (SMTP, IMAP, POP3, Redis inline, most home-grown ones):
//! a bounded line reader and a one-piece line writer, for any blocking
//! stream: a [`TcpStream`](crate::net::TcpStream), a TLS stream, or a
//! `BufReader` around either.
//!
//! ```
//! use greenpool_runtime::line::{read_line, write_line};
//! use std::io::Cursor;
//!
//! let mut input = Cursor::new(b"+OK ready\r\nno end".to_vec());
//! assert_eq!(read_line(&mut input, 64).unwrap(), "+OK ready");
//! // A line cut off by the end of the stream is an error, not a short line.
//! assert_eq!(read_line(&mut input, 64).unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
//!
//! let mut out = Vec::new();
//! write_line(&mut out, "LOGIN demo secret").unwrap();
//! assert_eq!(out, b"LOGIN demo secret\r\n");
//! // A line with a line end inside would smuggle a second command.
//! assert!(write_line(&mut out, "PING\r\nQUIT").is_err());
//! ```

use std::io::{self, BufRead, Write};

/// Read one line of at most `max` bytes (not counting the line end), ended by
/// `\n` or `\r\n`, and return it without the line end.
///
/// Never reads past the line end, so whatever follows stays in the reader
/// (which matters before a STARTTLS upgrade). Errors:
///
/// - [`io::ErrorKind::UnexpectedEof`]: the stream ended before a line end
///   ("the peer closed the connection" when no byte of the line came);
/// - [`io::ErrorKind::InvalidData`]: the line is longer than `max`, or is not
///   UTF-8;
/// - any error of the reader (a read timeout is `TimedOut`).
pub fn read_line<R: BufRead + ?Sized>(r: &mut R, max: usize) -> io::Result<String> {
    let mut line = Vec::new();
    loop {
        let available = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            let why = if line.is_empty() {
                "the peer closed the connection".to_owned()
            } else {
                format!(
                    "the peer closed the connection in the middle of a line ({} bytes \
                     without a line end)",
                    line.len()
                )
            };
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, why));
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        // Without its '\n' yet, a line may hold `max` bytes and a '\r'.
        if !done && line.len() + take > max.saturating_add(1) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("line longer than {max} bytes"),
            ));
        }
        line.extend_from_slice(&available[..take]);
        r.consume(take);
        if done {
            break;
        }
    }
    line.pop(); // '\n'
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if line.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("line longer than {max} bytes"),
        ));
    }
    String::from_utf8(line)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "the line is not UTF-8"))
}

/// Write `line` and `\r\n` in one write, then flush.
///
/// One write matters: over TLS every write is a record, and over TCP two
/// small segments in a row can wait for a delayed ACK. A `line` that contains
/// `\r` or `\n` is refused with [`io::ErrorKind::InvalidInput`] before
/// anything is written: it would end the line early and send a second
/// command of the caller's data.
pub fn write_line<W: Write + ?Sized>(w: &mut W, line: &str) -> io::Result<()> {
    if line.bytes().any(|b| b == b'\r' || b == b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "write_line: the line contains a line end (\\r or \\n)",
        ));
    }
    let mut buf = Vec::with_capacity(line.len() + 2);
    buf.extend_from_slice(line.as_bytes());
    buf.extend_from_slice(b"\r\n");
    w.write_all(&buf)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Cursor};

    #[test]
    fn bounded_lines() {
        let mut r = Cursor::new(b"abc\ndef\r\n\r\n".to_vec());
        assert_eq!(read_line(&mut r, 3).unwrap(), "abc");
        assert_eq!(read_line(&mut r, 3).unwrap(), "def");
        assert_eq!(read_line(&mut r, 3).unwrap(), "");
        let e = read_line(&mut r, 3).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("closed"), "{e}");

        let e = read_line(&mut Cursor::new(b"abcd\n".to_vec()), 3).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("longer than 3"), "{e}");
        // Without a line end at all: stops after max + 2 bytes, does not
        // buffer an endless line.
        let mut endless = BufReader::with_capacity(2, io::repeat(b'x'));
        assert_eq!(
            read_line(&mut endless, 10).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        // A small buffer splits the line: still one line.
        let mut small = BufReader::with_capacity(2, Cursor::new(b"hello\r\nrest".to_vec()));
        assert_eq!(read_line(&mut small, 5).unwrap(), "hello");
        let mut rest = String::new();
        io::Read::read_to_string(&mut small, &mut rest).unwrap();
        assert_eq!(rest, "rest");
        assert_eq!(
            read_line(&mut Cursor::new(vec![0xff, b'\n']), 5)
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn one_piece_lines() {
        struct Count(Vec<Vec<u8>>);
        impl Write for Count {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.push(b.to_vec());
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = Count(Vec::new());
        write_line(&mut w, "PING").unwrap();
        assert_eq!(w.0, vec![b"PING\r\n".to_vec()]);
        for bad in ["a\nb", "a\rb", "\n"] {
            assert_eq!(
                write_line(&mut w, bad).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
        }
        assert_eq!(w.0.len(), 1);
    }
}

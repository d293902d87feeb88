//! The few bits of the PostgreSQL wire protocol the router needs: telling the client's first
//! packets apart (startup, SSLRequest, GSSENCRequest, CancelRequest, garbage), reading the
//! SQLSTATE of a server's ErrorResponse, and writing an ErrorResponse of our own.

/// PostgreSQL refuses longer startup packets (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_LEN: usize = 10_000;
pub const SSL_REQUEST: u32 = 80877103;
pub const GSSENC_REQUEST: u32 = 80877104;
pub const CANCEL_REQUEST: u32 = 80877102;
/// Largest server ErrorResponse read while a connection is being set up.
pub const MAX_ERROR_LEN: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packet {
    /// StartupMessage (protocol 3.x) of this total length.
    Startup(usize),
    SslRequest,
    GssEncRequest,
    /// CancelRequest (16 bytes in protocol 3.0, longer keys in 3.2).
    Cancel(usize),
    /// Anything else: not PostgreSQL.
    Invalid,
}

impl Packet {
    /// Total length in bytes (0 for `Invalid`).
    pub fn size(self) -> usize {
        match self {
            Packet::Startup(n) | Packet::Cancel(n) => n,
            Packet::SslRequest | Packet::GssEncRequest => 8,
            Packet::Invalid => 0,
        }
    }
    pub fn is_encryption_request(self) -> bool {
        matches!(self, Packet::SslRequest | Packet::GssEncRequest)
    }
}

/// Classifies a client's packet from its first 8 bytes (length and code).
pub fn classify(head: &[u8; 8]) -> Packet {
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    match code {
        SSL_REQUEST if len == 8 => Packet::SslRequest,
        GSSENC_REQUEST if len == 8 => Packet::GssEncRequest,
        CANCEL_REQUEST if (16..=264).contains(&len) => Packet::Cancel(len),
        // Protocol major version 3, any minor.
        c if c >> 16 == 3 && (8..=MAX_STARTUP_LEN).contains(&len) => Packet::Startup(len),
        _ => Packet::Invalid,
    }
}

/// The total length of a backend message from its 5-byte header (`type`, int32 length), if sane.
pub fn message_len(head: &[u8; 5]) -> Option<usize> {
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    (4..=MAX_ERROR_LEN).contains(&len).then_some(len + 1)
}

/// The SQLSTATE (`C` field) of a whole ErrorResponse message (`E`, length, fields).
pub fn error_code(msg: &[u8]) -> Option<&str> {
    let mut rest = msg.get(5..)?;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0)?;
        if field == b'C' {
            return std::str::from_utf8(&tail[..end]).ok();
        }
        rest = &tail[end + 1..];
    }
    None
}

/// Errors after which the same connection attempt may go to another server without the client
/// noticing: the server is starting up, shutting down or in recovery (57P03), or was shut down
/// by an administrator while the client waited (57P01, 57P02).
pub fn retriable(sqlstate: &str) -> bool {
    matches!(sqlstate, "57P03" | "57P01" | "57P02")
}

/// An ErrorResponse: severity FATAL, the given SQLSTATE, message and hint.
pub fn error_response(sqlstate: &str, message: &str, hint: Option<&str>) -> Vec<u8> {
    let mut body = Vec::with_capacity(64 + message.len());
    let mut field = |t: u8, s: &str| {
        body.push(t);
        // A NUL would end the field early: drop any.
        body.extend(s.bytes().filter(|&b| b != 0));
        body.push(0);
    };
    field(b'S', "FATAL");
    field(b'V', "FATAL");
    field(b'C', sqlstate);
    field(b'M', message);
    if let Some(h) = hint {
        field(b'H', h);
    }
    body.push(0);
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(b'E');
    out.extend(((body.len() + 4) as u32).to_be_bytes());
    out.extend(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(len: u32, code: u32) -> [u8; 8] {
        let mut h = [0u8; 8];
        h[..4].copy_from_slice(&len.to_be_bytes());
        h[4..].copy_from_slice(&code.to_be_bytes());
        h
    }

    #[test]
    fn classifies_first_packets() {
        assert_eq!(classify(&head(8, SSL_REQUEST)), Packet::SslRequest);
        assert_eq!(classify(&head(8, GSSENC_REQUEST)), Packet::GssEncRequest);
        assert_eq!(classify(&head(16, CANCEL_REQUEST)), Packet::Cancel(16));
        assert_eq!(classify(&head(84, 196608)), Packet::Startup(84));
        assert_eq!(classify(&head(84, 196610)), Packet::Startup(84)); // 3.2
        assert_eq!(classify(&head(9, SSL_REQUEST)), Packet::Invalid);
        assert_eq!(classify(&head(100_000, 196608)), Packet::Invalid);
        assert_eq!(classify(&head(4, 196608)), Packet::Invalid);
        assert_eq!(classify(&head(84, 131072)), Packet::Invalid); // protocol 2
        assert_eq!(classify(b"GET / HT"), Packet::Invalid);
        assert_eq!(classify(&[0xff; 8]), Packet::Invalid);
    }

    #[test]
    fn error_response_round_trips() {
        let m = error_response(
            "57P03",
            "no primary available for cluster demo, retry",
            Some("wait"),
        );
        assert_eq!(m[0], b'E');
        let len = u32::from_be_bytes([m[1], m[2], m[3], m[4]]) as usize;
        assert_eq!(len + 1, m.len());
        assert_eq!(error_code(&m), Some("57P03"));
        assert_eq!(*m.last().unwrap(), 0);
        let text = String::from_utf8_lossy(&m);
        assert!(text.contains("no primary available for cluster demo, retry"));
        let mut h = [0u8; 5];
        h.copy_from_slice(&m[..5]);
        assert_eq!(message_len(&h), Some(m.len()));
    }

    #[test]
    fn error_code_of_server_messages() {
        // As PostgreSQL sends it while shutting down.
        let mut body = Vec::new();
        for (t, s) in [
            (b'S', "FATAL"),
            (b'V', "FATAL"),
            (b'C', "57P03"),
            (b'M', "the database system is shutting down"),
        ] {
            body.push(t);
            body.extend(s.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut m = vec![b'E'];
        m.extend(((body.len() + 4) as u32).to_be_bytes());
        m.extend(body);
        assert_eq!(error_code(&m), Some("57P03"));
        assert!(retriable("57P03"));
        assert!(!retriable("28P01"));
        assert!(!retriable("53300"));
        assert_eq!(error_code(b"E\0\0\0\x04"), None);
        assert_eq!(error_code(b"E\0\0\0\x09Sxx"), None);
        assert_eq!(error_code(b""), None);
    }
}

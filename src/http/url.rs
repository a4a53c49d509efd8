//! Absolute `ws://`, `wss://`, `http://` and `https://` URLs of the services ignis calls (the
//! ElevenLabs API and conversation socket, Twilio's REST API), split into what a client needs:
//! TLS or not, host, port and request target.

/// A parsed `ws://`, `wss://`, `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Whether TLS is used.
    pub tls: bool,
    /// Host name or IP literal (brackets removed).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Path and query, at least `/`.
    pub target: String,
}

/// Why a URL was refused (configuration or a URL a service handed out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlError {
    /// No `scheme://`.
    NotAbsolute,
    /// A scheme other than ws, wss, http or https.
    UnsupportedScheme,
    /// Empty authority, user info (`user@`), an empty host or an unclosed IPv6 bracket.
    BadAuthority,
    /// A port that is not a number in 0..=65535.
    BadPort,
}

error_text!(UrlError {
    NotAbsolute => "not an absolute URL",
    UnsupportedScheme => "not a ws, wss, http or https URL",
    BadAuthority => "bad host in URL",
    BadPort => "bad port in URL",
});

impl Endpoint {
    /// Parses an absolute URL.
    pub fn parse(url: &str) -> Result<Endpoint, UrlError> {
        let (scheme, rest) = url.split_once("://").ok_or(UrlError::NotAbsolute)?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "wss" | "https" => true,
            "ws" | "http" => false,
            _ => return Err(UrlError::UnsupportedScheme),
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        if authority.is_empty() || authority.contains('@') {
            return Err(UrlError::BadAuthority);
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or(UrlError::BadAuthority)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| UrlError::BadPort)?,
                None if after.is_empty() => default_port,
                None => return Err(UrlError::BadAuthority),
            };
            (h.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| UrlError::BadPort)?),
                None => (authority.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err(UrlError::BadAuthority);
        }
        let target = match target {
            "" => "/".to_owned(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_owned(),
        };
        Ok(Endpoint {
            tls,
            host,
            port,
            target,
        })
    }

    /// `host` or `host:port` when the port is not the default, for the `Host` header.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == if self.tls { 443 } else { 80 } {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The URL again, with a WebSocket scheme.
    pub fn ws_url(&self) -> String {
        format!(
            "{}://{}{}",
            if self.tls { "wss" } else { "ws" },
            self.host_header(),
            self.target
        )
    }
}

/// Percent-encodes a query value (RFC 3986 §2.3: unreserved characters pass).
pub fn encode_query_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        let e = Endpoint::parse("https://api.elevenlabs.io").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port, e.target.as_str()),
            (true, "api.elevenlabs.io", 443, "/")
        );
        let e = Endpoint::parse("ws://127.0.0.1:9000/v1/x?y=1").unwrap();
        assert_eq!(
            (e.tls, e.port, e.target.as_str()),
            (false, 9000, "/v1/x?y=1")
        );
        let e = Endpoint::parse("wss://[::1]:8443?a").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.target.as_str()),
            ("::1", 8443, "/?a")
        );
        assert_eq!(e.host_header(), "[::1]:8443");
        for (bad, why) in [
            ("ftp://x", UrlError::UnsupportedScheme),
            ("https://", UrlError::BadAuthority),
            ("https://u@h", UrlError::BadAuthority),
            ("http://h:port", UrlError::BadPort),
            ("http://[::1", UrlError::BadAuthority),
            ("nope", UrlError::NotAbsolute),
        ] {
            assert_eq!(Endpoint::parse(bad), Err(why), "{bad}");
        }
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(encode_query_value("agent_1 x/ä~"), "agent_1%20x%2F%C3%A4~");
    }
}

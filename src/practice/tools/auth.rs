//! The bearer secrets of the tool and admin APIs.

use super::error::ToolError;
use crate::practice::calls::hash_token;
use crate::secret::constant_time_eq;

/// Bytes of the admin token's digest that name it in the audit ([`Secrets::admin_id`]).
const ADMIN_ID_BYTES: usize = 4;

/// The agent and admin secrets, kept as SHA-256 so comparisons are constant-time and length-blind.
#[derive(Clone)]
pub struct Secrets {
    tools: [u8; 32],
    admin: Option<[u8; 32]>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(<redacted>)")
    }
}

impl Secrets {
    /// From `TOOLS_TOKEN` and optionally `ADMIN_TOKEN` (no admin token disables the admin API).
    pub fn new(tools_token: &str, admin_token: Option<&str>) -> Secrets {
        Secrets {
            tools: hash_token(tools_token.as_bytes()),
            admin: admin_token
                .filter(|t| !t.is_empty())
                .map(|t| hash_token(t.as_bytes())),
        }
    }

    /// Checks an `Authorization` header against the tools secret.
    pub fn check_tools(&self, authorization: Option<&[u8]>) -> Result<(), ToolError> {
        check_bearer(&self.tools, authorization)
    }

    /// Who holds the admin secret, for the audit: the first 4 bytes of its SHA-256 in hex (a
    /// token worth 256 bits gives nothing away by them; a rotated token shows as a new id).
    pub fn admin_id(&self) -> Option<String> {
        self.admin
            .as_ref()
            .map(|h| format!("admin:{}", crate::secret::hex_lower(&h[..ADMIN_ID_BYTES])))
    }

    /// Checks an `Authorization` header against the admin secret.
    pub fn check_admin(&self, authorization: Option<&[u8]>) -> Result<(), ToolError> {
        match &self.admin {
            Some(h) => check_bearer(h, authorization),
            None => Err(ToolError::AdminDisabled),
        }
    }
}

fn check_bearer(expected: &[u8; 32], authorization: Option<&[u8]>) -> Result<(), ToolError> {
    let Some(h) = authorization else {
        return Err(ToolError::Unauthorized);
    };
    let h = h.trim_ascii();
    let token = if h.len() > 7 && h[..7].eq_ignore_ascii_case(b"bearer ") {
        h[7..].trim_ascii()
    } else {
        h
    };
    if token.is_empty() {
        return Err(ToolError::Unauthorized);
    }
    if !constant_time_eq(&hash_token(token), expected) {
        return Err(ToolError::Forbidden);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_check() {
        let s = Secrets::new("tok", None);
        assert!(s.check_tools(Some(b"Bearer tok")).is_ok());
        assert!(s.check_tools(Some(b"bearer  tok ")).is_ok());
        assert_eq!(s.check_tools(None).unwrap_err().status(), 401);
        assert_eq!(
            s.check_tools(Some(b"Bearer nope")).unwrap_err().status(),
            403
        );
        assert_eq!(
            s.check_admin(Some(b"Bearer tok")).unwrap_err().status(),
            403
        );
    }
}

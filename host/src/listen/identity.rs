//! What a listener learns of a client before CONNECT, beyond its address: the certificate it
//! presented in a TLS handshake ([`ClientCertificate`], read from the DER the TLS layer
//! verified) and credentials it sent with a WebSocket HTTP upgrade ([`UpgradeCredentials`]).
//! Both travel in the [`Peer`](super::Peer) to the authenticate step and on to plugins.
//!
//! A certificate is hostile input like any other: its size is capped by the TLS layer, it is
//! parsed once per connection, and every text taken from it is made printable and bounded here
//! (a subject with control characters must not forge log lines or principal names).

use std::fmt;

use bytes::Bytes;

/// Longest subject DN or alternative name kept (longer ones are cut at a character boundary).
const MAX_NAME: usize = 1024;
/// Most subject alternative names kept.
const MAX_ALT_NAMES: usize = 64;

/// A client certificate the TLS layer verified against the broker's `client_ca`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The subject DN in RFC 4514 form (most specific attribute first), e.g.
    /// `CN=alice,O=Example`.
    pub subject: String,
    /// The subject's first common name (`CN`), when it has one.
    pub common_name: Option<String>,
    /// Subject alternative names as text: DNS names, e-mail addresses, URIs, IP addresses.
    pub subject_alt_names: Vec<String>,
    /// The whole certificate, DER-encoded.
    pub der: Bytes,
}

/// Why a certificate's subject could not be read.
#[derive(Debug, thiserror::Error)]
#[error("unreadable client certificate: {0}")]
pub struct CertificateError(String);

impl ClientCertificate {
    /// Reads the subject and alternative names of a DER certificate (already verified by the
    /// TLS layer; this only parses).
    pub fn from_der(der: &[u8]) -> Result<ClientCertificate, CertificateError> {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| CertificateError(e.to_string()))?;
        let subject = cert.subject();
        let common_name = subject
            .iter_common_name()
            .next()
            .map(|cn| printable(&attribute_text(cn)));
        let mut alt_names = Vec::new();
        if let Ok(Some(extension)) = cert.subject_alternative_name() {
            for name in extension.value.general_names.iter().take(MAX_ALT_NAMES) {
                let text = match name {
                    GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                        (*s).to_string()
                    }
                    GeneralName::IPAddress(bytes) => match ip_text(bytes) {
                        Some(ip) => ip,
                        None => continue,
                    },
                    _ => continue,
                };
                alt_names.push(printable(&text));
            }
        }
        Ok(ClientCertificate {
            subject: printable(&rfc4514(subject)),
            common_name,
            subject_alt_names: alt_names,
            der: Bytes::copy_from_slice(der),
        })
    }
}

/// An attribute's value as text: the string types as they are, anything else as `#` + hex
/// (RFC 4514's form for values without a string representation).
fn attribute_text(attr: &x509_parser::x509::AttributeTypeAndValue<'_>) -> String {
    match attr.as_str() {
        Ok(text) => text.to_string(),
        Err(_) => {
            let bytes = attr.as_slice();
            let mut out = String::with_capacity(1 + bytes.len() * 2);
            out.push('#');
            for b in bytes {
                out.push_str(&format!("{b:02x}"));
            }
            out
        }
    }
}

/// The DN in RFC 4514 order (last RDN first), `TYPE=value` joined by `,` (and `+` within a
/// multi-valued RDN), with the special characters escaped.
fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> String {
    use x509_parser::objects::{oid2abbrev, oid_registry};
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let oid = attr.attr_type();
                    let key = oid2abbrev(oid, oid_registry())
                        .map(str::to_string)
                        .unwrap_or_else(|_| oid.to_id_string());
                    format!("{key}={}", escape_value(&attribute_text(attr)))
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// RFC 4514 §2.4 escaping of an attribute value.
fn escape_value(value: &str) -> String {
    if value.starts_with('#')
        && value.len() > 1
        && value[1..].bytes().all(|b| b.is_ascii_hexdigit())
    {
        return value.to_string(); // already the hex form
    }
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).to_string()),
        _ => None,
    }
}

/// Control characters replaced by U+FFFD and the length capped at [`MAX_NAME`] bytes.
fn printable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if out.len() > MAX_NAME {
        let mut cut = MAX_NAME;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

/// Credentials a WebSocket client sent with its HTTP upgrade request. `Debug` never shows the
/// secret.
#[derive(Clone, PartialEq, Eq)]
pub enum UpgradeCredentials {
    /// `Authorization: Basic ...` (login and passcode, as CONNECT's `login` and `passcode`).
    Basic {
        /// The user name.
        login: String,
        /// The password.
        passcode: String,
    },
    /// A bearer token (only a plugin can check one).
    Bearer(String),
}

impl UpgradeCredentials {
    /// The login and passcode of Basic credentials.
    pub fn basic(&self) -> Option<(&str, &str)> {
        match self {
            UpgradeCredentials::Basic { login, passcode } => Some((login, passcode)),
            UpgradeCredentials::Bearer(_) => None,
        }
    }

    /// Bytes held (for the plugin input cap).
    pub fn len(&self) -> usize {
        match self {
            UpgradeCredentials::Basic { login, passcode } => login.len() + passcode.len(),
            UpgradeCredentials::Bearer(token) => token.len(),
        }
    }

    /// Whether there is nothing in them.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for UpgradeCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpgradeCredentials::Basic { login, .. } => f
                .debug_struct("Basic")
                .field("login", login)
                .field("passcode", &"<hidden>")
                .finish(),
            UpgradeCredentials::Bearer(_) => f.write_str("Bearer(<hidden>)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_as_rfc_4514_says() {
        assert_eq!(escape_value("alice"), "alice");
        assert_eq!(escape_value("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape_value(" lead"), "\\ lead");
        assert_eq!(escape_value("trail "), "trail\\ ");
        assert_eq!(escape_value("#x"), "\\#x");
        assert_eq!(escape_value("#0a0b"), "#0a0b");
    }

    #[test]
    fn names_are_made_printable_and_bounded() {
        assert_eq!(printable("a\nb"), "a\u{fffd}b");
        let long = "é".repeat(MAX_NAME);
        let cut = printable(&long);
        assert!(cut.len() <= MAX_NAME && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn a_certificate_gives_its_subject_cn_and_alternative_names() {
        use rcgen::{CertificateParams, DnType, KeyPair, SanType};
        let mut params = CertificateParams::new(vec!["sensor.example".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "sensor-7");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Example, Inc");
        params.subject_alt_names.push(SanType::Rfc822Name(
            "sensor@example.com".try_into().unwrap(),
        ));
        params
            .subject_alt_names
            .push(SanType::IpAddress("192.0.2.7".parse().unwrap()));
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let parsed = ClientCertificate::from_der(cert.der()).unwrap();
        assert_eq!(parsed.subject, "O=Example\\, Inc,CN=sensor-7");
        assert_eq!(parsed.common_name.as_deref(), Some("sensor-7"));
        assert_eq!(
            parsed.subject_alt_names,
            ["sensor.example", "sensor@example.com", "192.0.2.7"]
        );
        assert_eq!(&parsed.der[..], &cert.der()[..]);
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(ClientCertificate::from_der(b"not a certificate").is_err());
        assert!(ClientCertificate::from_der(&[]).is_err());
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let basic = UpgradeCredentials::Basic {
            login: "alice".into(),
            passcode: "s3cret".into(),
        };
        let shown = format!("{basic:?}");
        assert!(shown.contains("alice") && !shown.contains("s3cret"));
        let bearer = format!("{:?}", UpgradeCredentials::Bearer("tok3n".into()));
        assert!(!bearer.contains("tok3n"));
    }
}

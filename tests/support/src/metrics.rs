//! Reading `GET /metrics` in tests: an HTTP/1.0 GET of the admin listener, and a strict parser
//! of the OpenMetrics text it answers. The parser refuses what a scraper would: a sample
//! outside its declared family, a sample name that does not fit the family's type, a series
//! twice, a bad label or value, anything after `# EOF` or no `# EOF`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` with an optional bearer token: (status line, headers, body).
pub async fn get(admin: SocketAddr, path: &str, token: Option<&str>) -> (String, String, String) {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(admin)
            .await
            .expect("connect to the admin listener");
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\n{auth}\r\n").as_bytes())
            .await
            .expect("write request");
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .expect("read response");
        response
    };
    let response = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .expect("the admin listener did not answer within 10 s");
    let text = String::from_utf8(response).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let (line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (line.to_string(), headers.to_string(), body.to_string())
}

/// `GET /metrics` (which must answer 200), parsed.
pub async fn scrape(admin: SocketAddr, token: Option<&str>) -> Scrape {
    let (line, headers, body) = get(admin, "/metrics", token).await;
    assert!(line.starts_with("HTTP/1.0 200"), "/metrics answered {line}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{headers}"
    );
    Scrape::parse(&body).unwrap_or_else(|err| panic!("invalid exposition: {err}\n{body}"))
}

/// One sample's labels, sorted by name.
pub type Labels = BTreeMap<String, String>;

/// A parsed exposition: family types, and every sample by name and labels.
#[derive(Debug, Default)]
pub struct Scrape {
    /// Family name → type (`counter`, `gauge`, `histogram`...).
    pub types: HashMap<String, String>,
    /// Sample name → (labels, value).
    pub samples: HashMap<String, Vec<(Labels, f64)>>,
}

impl Scrape {
    /// Parses OpenMetrics text strictly.
    pub fn parse(text: &str) -> Result<Scrape, String> {
        let mut scrape = Scrape::default();
        let mut family: Option<(String, String)> = None;
        let mut seen = std::collections::HashSet::new();
        let mut eof = false;
        for (number, line) in text.lines().enumerate() {
            let at = |msg: String| format!("line {}: {msg}: {line:?}", number + 1);
            if eof {
                return Err(at("text after # EOF".into()));
            }
            if line == "# EOF" {
                eof = true;
                continue;
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let (kind, name, arg) = (parts.next(), parts.next(), parts.next());
                let (Some(kind), Some(name)) = (kind, name) else {
                    return Err(at("bad descriptor".into()));
                };
                check_name(name).map_err(at)?;
                match kind {
                    "HELP" | "UNIT" => {}
                    "TYPE" => {
                        let kind = arg.ok_or_else(|| at("TYPE without a type".into()))?;
                        if !["counter", "gauge", "histogram", "info", "unknown"].contains(&kind) {
                            return Err(at(format!("unknown type {kind}")));
                        }
                        if scrape.types.insert(name.into(), kind.into()).is_some() {
                            return Err(at("family declared twice".into()));
                        }
                        family = Some((name.into(), kind.into()));
                    }
                    other => return Err(at(format!("unknown descriptor {other}"))),
                }
                continue;
            }
            let (name, labels, value) = sample(line).map_err(at)?;
            let Some((family_name, kind)) = &family else {
                return Err(at("sample before any TYPE".into()));
            };
            let suffix = name
                .strip_prefix(family_name.as_str())
                .ok_or_else(|| at(format!("sample outside family {family_name}")))?;
            let allowed: &[&str] = match kind.as_str() {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_sum", "_count", "_created"],
                "info" => &["_info"],
                _ => &[""],
            };
            if !allowed.contains(&suffix) {
                return Err(at(format!("{suffix:?} does not fit a {kind}")));
            }
            if kind == "histogram" && (suffix == "_bucket") != labels.contains_key("le") {
                return Err(at("le only on buckets".into()));
            }
            if !seen.insert((name.clone(), labels.clone())) {
                return Err(at("series twice".into()));
            }
            scrape
                .samples
                .entry(name)
                .or_default()
                .push((labels, value));
        }
        if !eof {
            return Err("no # EOF".into());
        }
        Ok(scrape)
    }

    /// The value of the sample `name` whose labels include every one of `labels`; panics unless
    /// exactly one matches.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let matching = self.matching(name, labels);
        assert_eq!(
            matching.len(),
            1,
            "{name}{labels:?}: {} samples match: {matching:?}",
            matching.len()
        );
        matching[0].1
    }

    /// The samples of `name` whose labels include every one of `labels`.
    pub fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(Labels, f64)> {
        self.samples
            .get(name)
            .map(|samples| {
                samples
                    .iter()
                    .filter(|(have, _)| {
                        labels
                            .iter()
                            .all(|(k, v)| have.get(*k).map(String::as_str) == Some(*v))
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The values of label `label` over the samples of `name`.
    pub fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .matching(name, &[])
            .into_iter()
            .filter_map(|(labels, _)| labels.get(label).cloned())
            .collect();
        values.sort();
        values
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if ok {
        Ok(())
    } else {
        Err(format!("bad metric name {name:?}"))
    }
}

/// `name{labels} value`.
fn sample(line: &str) -> Result<(String, Labels, f64), String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| "no value".to_string())?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut labels = Labels::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        loop {
            // name
            let start = chars.peek().map(|(i, _)| *i).ok_or("unclosed labels")?;
            let mut eq = None;
            for (i, c) in chars.by_ref() {
                if c == '=' {
                    eq = Some(i);
                    break;
                }
            }
            let eq = eq.ok_or("label without =")?;
            let key = &inner[start..eq];
            check_name(key)?;
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("label value not quoted".into());
            }
            let mut value = String::new();
            loop {
                match chars.next().ok_or("unterminated label value")?.1 {
                    '"' => break,
                    '\\' => match chars.next().ok_or("dangling escape")?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        other => return Err(format!("bad escape \\{other}")),
                    },
                    '\n' => return Err("raw newline in a label value".into()),
                    c => value.push(c),
                }
            }
            if labels.insert(key.to_string(), value).is_some() {
                return Err(format!("label {key} twice"));
            }
            match chars.next().ok_or("unclosed labels")? {
                (_, ',') => continue,
                (i, '}') => {
                    rest = &inner[i + 1..];
                    break;
                }
                (_, c) => return Err(format!("unexpected {c:?} after a label")),
            }
        }
    }
    let value = rest
        .strip_prefix(' ')
        .ok_or_else(|| "no space before the value".to_string())?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    Ok((name.to_string(), labels, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_exposition_parses_with_escapes() {
        let text = "# HELP a_b help text\n# TYPE a_b counter\na_b_total{q=\"x\\\"y\\\\z\\n\",v=\"/\"} 3\n\
                    # TYPE h histogram\nh_sum 1.5\nh_count 2\nh_bucket{le=\"1.0\"} 1\nh_bucket{le=\"+Inf\"} 2\n# EOF\n";
        let scrape = Scrape::parse(text).unwrap();
        assert_eq!(scrape.value("a_b_total", &[("q", "x\"y\\z\n")]), 3.0);
        assert_eq!(scrape.value("h_bucket", &[("le", "+Inf")]), 2.0);
    }

    #[test]
    fn what_a_scraper_refuses_is_refused() {
        for bad in [
            "# TYPE a counter\na_total 1\n",                       // no EOF
            "# TYPE a counter\na 1\n# EOF\n",                      // counter sample without _total
            "# TYPE a gauge\nb 1\n# EOF\n",                        // outside its family
            "# TYPE a gauge\na{x=\"1\"} 1\na{x=\"1\"} 2\n# EOF\n", // twice
            "# TYPE a gauge\na{x=1} 1\n# EOF\n",                   // unquoted
            "# TYPE a gauge\na 1\n# EOF\nmore\n",                  // after EOF
            "# TYPE a gauge\na one\n# EOF\n",                      // bad value
        ] {
            assert!(Scrape::parse(bad).is_err(), "{bad}");
        }
    }
}

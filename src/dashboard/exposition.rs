//! Reading the Prometheus text exposition this process renders, one sample per line. Only what
//! metrics-exporter-prometheus writes is needed: `# ` comment lines, `name value` and
//! `name{label="value",…} value`, label values with `\\`, `\"` and `\n` escapes.

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    pub labels: Vec<(&'a str, String)>,
    pub value: f64,
}

impl Sample<'_> {
    /// The value of label `key`, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Every sample of `text`; lines that do not parse are skipped.
pub fn parse(text: &str) -> impl Iterator<Item = Sample<'_>> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(line)
}

fn line(l: &str) -> Option<Sample<'_>> {
    let name_end = l.find(['{', ' '])?;
    let name = &l[..name_end];
    let (labels, rest) = if l[name_end..].starts_with('{') {
        labels(&l[name_end + 1..])?
    } else {
        (Vec::new(), &l[name_end..])
    };
    let value = rest.split_whitespace().next()?;
    Some(Sample {
        name,
        labels,
        value: number(value)?,
    })
}

/// `key="value",…}` and what follows the closing brace.
fn labels(mut s: &str) -> Option<(Vec<(&str, String)>, &str)> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start_matches(',');
        if let Some(rest) = s.strip_prefix('}') {
            return Some((out, rest));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim();
        let mut chars = s[eq + 1..].strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        out.push((key, value));
        s = &s[eq + 2 + end + 1..];
    }
}

/// A sample value: a float, `+Inf`, `-Inf` or `NaN`.
pub fn number(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        s => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_labelled_and_escaped_samples() {
        let text = "# HELP x help\n# TYPE x counter\nx 3\n\
            y_bucket{route=\"/data/{id}\",le=\"+Inf\"} 7\n\
            z{a=\"q\\\"uote\\\\d\\n\",b=\"\"} 1.5e-3 1700000000\n\
            broken{a=\"x} 1\n";
        let s: Vec<_> = parse(text).collect();
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!((s[0].name, s[0].value), ("x", 3.0));
        assert_eq!(s[1].label("route"), Some("/data/{id}"));
        assert_eq!(s[1].label("le"), Some("+Inf"));
        assert_eq!(s[1].value, 7.0);
        assert_eq!(s[2].label("a"), Some("q\"uote\\d\n"));
        assert_eq!(s[2].label("b"), Some(""));
        assert_eq!(s[2].value, 0.0015);
    }

    #[test]
    fn reads_special_values() {
        assert_eq!(number("+Inf"), Some(f64::INFINITY));
        assert!(number("NaN").is_some_and(f64::is_nan));
        assert_eq!(number("x"), None);
    }
}

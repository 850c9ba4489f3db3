/*!
Small predicates for the formats Kubernetes, Karpenter and AWS enforce (names,
label values, durations, quantities, cron schedules). Each mirrors a pattern from
the Karpenter v1 CRDs or the Kubernetes API (karpenter-facts §1.3) so that a bad
value is caught offline, before any API call.
*/

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters.
pub fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(is_alnum)
        && s.ends_with(is_alnum)
        && s.chars().all(|c| is_alnum(c) || matches!(c, '-' | '_' | '.'))
}

/// A label value: empty or a label name.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_label_name(s)
}

/// RFC 1123 subdomain: lowercase, at most 253 characters (Kubernetes object names).
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// RFC 1123 label: lowercase, at most 63 characters (namespaces).
pub fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && is_dns_subdomain(s)
}

/// A qualified name: `[prefix/]name` with a DNS-subdomain prefix.
pub fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(s),
    }
}

/// The domain part of a label key (`karpenter.sh` in `karpenter.sh/capacity-type`).
pub fn key_domain(key: &str) -> Option<&str> {
    key.split_once('/').map(|(d, _)| d)
}

fn units_duration(s: &str, units: &[char]) -> bool {
    // ([0-9]+(unit))+, and no longer than Go's time.Duration (int64
    // nanoseconds, about 2,562,047h) can hold: Karpenter parses it with Go.
    let mut digits = 0;
    let mut groups = 0;
    let mut value: u128 = 0;
    let mut total: u128 = 0;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            digits += 1;
            value = value.saturating_mul(10).saturating_add(u128::from(d));
        } else if units.contains(&c) && digits > 0 {
            let nanos: u128 = match c {
                'x' => 1_000_000,
                's' => 1_000_000_000,
                'm' => 60_000_000_000,
                _ => 3_600_000_000_000,
            };
            total = total.saturating_add(value.saturating_mul(nanos));
            digits = 0;
            value = 0;
            groups += 1;
        } else {
            return false;
        }
    }
    digits == 0 && groups > 0 && total <= i64::MAX as u128
}

/// `expireAfter` / `consolidateAfter`: `^(([0-9]+(s|m|h))+|Never)$`.
pub fn is_duration_or_never(s: &str) -> bool {
    s == "Never" || units_duration(s, &['s', 'm', 'h'])
}

/// `terminationGracePeriod`: `^([0-9]+(s|m|h))+$`.
pub fn is_duration(s: &str) -> bool {
    units_duration(s, &['s', 'm', 'h'])
}

/// Budget `duration`: `^((([0-9]+(h|m))|([0-9]+h[0-9]+m))(0s)?)$`.
pub fn is_budget_duration(s: &str) -> bool {
    let s = s.strip_suffix("0s").unwrap_or(s);
    if !units_duration(s, &['h', 'm']) {
        return false;
    }
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if let Some(t) = s.strip_suffix('h') {
        return digits(t);
    }
    if let Some(t) = s.strip_suffix('m') {
        if digits(t) {
            return true;
        }
        if let Some((h, m)) = t.split_once('h') {
            return digits(h) && digits(m);
        }
    }
    false
}

/// A Go duration as the chart settings take it (`10s`, `1m30s`, `500ms`).
pub fn is_go_duration(s: &str) -> bool {
    let t = s.replace("ms", "x");
    units_duration(&t, &['x', 's', 'm', 'h'])
}

/// Budget `nodes`: `^((100|[0-9]{1,2})%|[0-9]+)$`.
pub fn is_budget_nodes(s: &str) -> bool {
    if let Some(p) = s.strip_suffix('%') {
        return p == "100" || (!p.is_empty() && p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit()));
    }
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A 5-field cron expression (values range-checked per field) or a macro such as `@daily`.
pub fn is_cron(s: &str) -> bool {
    const MACROS: [&str; 7] = ["@annually", "@yearly", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"];
    if s.starts_with('@') {
        return MACROS.contains(&s);
    }
    const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() != 5 {
        return false;
    }
    let limits: [(u32, u32, &[&str]); 5] = [(0, 59, &[]), (0, 23, &[]), (1, 31, &[]), (1, 12, &MONTHS), (0, 7, &DAYS)];
    fields.iter().zip(limits).all(|(f, (lo, hi, names))| cron_field(f, lo, hi, names))
}

fn cron_field(f: &str, lo: u32, hi: u32, names: &[&str]) -> bool {
    let value = |v: &str| -> Option<u32> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(v)) {
            // Months are 1-based, weekdays 0-based.
            return Some(if lo == 1 { i as u32 + 1 } else { i as u32 });
        }
        v.parse::<u32>().ok().filter(|n| (lo..=hi).contains(n))
    };
    f.split(',').all(|part| {
        let (range, step) = match part.split_once('/') {
            Some((r, st)) => (r, Some(st)),
            None => (part, None),
        };
        if let Some(st) = step {
            if st.parse::<u32>().map(|n| n == 0 || n > hi).unwrap_or(true) {
                return false;
            }
        }
        if range == "*" || range == "?" {
            return true;
        }
        match range.split_once('-') {
            Some((a, b)) => matches!((value(a), value(b)), (Some(x), Some(y)) if x <= y),
            None => value(range).is_some(),
        }
    })
}

/// A Kubernetes quantity; returns its value in base units (approximate, for comparisons).
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    let (sign, body) = match s.as_bytes()[0] {
        b'+' => (1.0, &s[1..]),
        b'-' => (-1.0, &s[1..]),
        _ => (1.0, s),
    };
    let num_end = body.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(body.len());
    let (num, suffix) = body.split_at(num_end);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().ok()?;
            10f64.powi(exp)
        }
        _ => return None,
    };
    Some(sign * n * mult)
}

/// EBS `volumeSize` with a unit: up to 59000Gi, 64000G, 58Ti or 64T.
pub fn is_volume_size(s: &str) -> bool {
    let (num, max) = if let Some(n) = s.strip_suffix("Gi") {
        (n, 59000)
    } else if let Some(n) = s.strip_suffix("Ti") {
        (n, 58)
    } else if let Some(n) = s.strip_suffix('G') {
        (n, 64000)
    } else if let Some(n) = s.strip_suffix('T') {
        (n, 64)
    } else {
        return false;
    };
    !num.is_empty()
        && !num.starts_with('0')
        && num.len() <= 5
        && num.bytes().all(|b| b.is_ascii_digit())
        && num.parse::<u32>().map(|v| (1..=max).contains(&v)).unwrap_or(false)
}

/// Size of a volume in GiB, for the gp3 IOPS/throughput ratio checks.
pub fn volume_size_gib(s: &str) -> Option<f64> {
    if let Some(n) = s.strip_suffix("Gi") {
        n.parse().ok()
    } else if let Some(n) = s.strip_suffix("Ti") {
        n.parse::<f64>().ok().map(|v| v * 1024.0)
    } else if let Some(n) = s.strip_suffix('G') {
        n.parse::<f64>().ok().map(|v| v * 1e9 / 1024f64.powi(3))
    } else if let Some(n) = s.strip_suffix('T') {
        n.parse::<f64>().ok().map(|v| v * 1e12 / 1024f64.powi(3))
    } else {
        None
    }
}

/// `prefix-[0-9a-z]+` ids such as `subnet-0abc`, `sg-1`, `ami-2`.
pub fn is_aws_id(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('-'))
        .map(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()))
        .unwrap_or(false)
}

/// EKS cluster names: `^[0-9A-Za-z][A-Za-z0-9\-_]*$`, 1–100 characters.
pub fn is_cluster_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.starts_with(is_alnum)
        && s.chars().all(|c| is_alnum(c) || c == '-' || c == '_')
}

/// AWS region names such as `us-west-2`, `us-gov-east-1`, `cn-north-1`.
pub fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts.len() <= 5
        && parts[0].len() == 2
        && parts.iter().take(parts.len() - 1).all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts.last().map(|p| !p.is_empty() && p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit())).unwrap_or(false)
}

/// IAM role/instance profile names: `[\w+=,.@-]+`, up to 64 characters.
pub fn is_iam_name(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.chars().all(|c| is_alnum(c) || "_+=,.@-".contains(c))
}

/// SQS queue names: alphanumerics, hyphens and underscores, up to 80 characters.
pub fn is_queue_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 80 && s.chars().all(|c| is_alnum(c) || c == '-' || c == '_')
}

/// CloudFormation stack names: `[a-zA-Z][-a-zA-Z0-9]*`, up to 128 characters.
pub fn is_stack_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.starts_with(|c: char| c.is_ascii_alphabetic()) && s.chars().all(|c| is_alnum(c) || c == '-')
}

/// S3 bucket names (the common rules).
pub fn is_bucket_name(s: &str) -> bool {
    (3..=63).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !s.contains("..")
}

/// EC2/AWS resource tag keys and values: printable, bounded length, not `aws:`-prefixed keys.
pub fn is_aws_tag_key(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && !s.starts_with("aws:") && s.chars().all(|c| !c.is_control())
}

pub fn is_aws_tag_value(s: &str) -> bool {
    s.len() <= 256 && s.chars().all(|c| !c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for ok in ["720h", "1h30m", "30s", "Never", "0s"] {
            assert!(is_duration_or_never(ok), "{ok}");
        }
        for bad in ["", "1d", "h", "10", "never", "1.5h", "-1h", "2562048h", "99999999999999999999h"] {
            assert!(!is_duration_or_never(bad), "{bad}");
        }
        assert!(is_duration("2562047h"), "the longest Go duration in hours");
        assert!(!is_duration("Never"));
        for ok in ["8h", "30m", "1h30m", "10h0s"] {
            assert!(is_budget_duration(ok), "{ok}");
        }
        for bad in ["30s", "1d", "h", "1h30m10s"] {
            assert!(!is_budget_duration(bad), "{bad}");
        }
    }

    #[test]
    fn names_and_values() {
        assert!(is_qualified_name("nvidia.com/gpu"));
        assert!(is_qualified_name("workload"));
        assert!(!is_qualified_name("Bad Domain/x"));
        assert!(!is_qualified_name("a/b/c"));
        assert!(is_label_value(""));
        assert!(!is_label_value("has space"));
        assert!(!is_label_value(&"x".repeat(64)));
        assert!(is_dns_subdomain("gpu-inference"));
        assert!(!is_dns_subdomain("GPU"));
        assert!(is_cluster_name("my_cluster-1"));
        assert!(!is_cluster_name("-x"));
        assert!(is_region("us-gov-west-1") && is_region("eu-west-1") && !is_region("useast1"));
    }

    #[test]
    fn quantities_and_sizes() {
        assert_eq!(parse_quantity("100"), Some(100.0));
        assert_eq!(parse_quantity("1Gi"), Some(1073741824.0));
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert!(parse_quantity("lots").is_none());
        assert!(parse_quantity("1GB").is_none());
        assert!(is_volume_size("100Gi") && is_volume_size("64T") && is_volume_size("58Ti"));
        assert!(!is_volume_size("100") && !is_volume_size("59Ti") && !is_volume_size("0Gi") && !is_volume_size("010Gi"));
        assert!(is_budget_nodes("10%") && is_budget_nodes("100%") && is_budget_nodes("0"));
        assert!(!is_budget_nodes("101%") && !is_budget_nodes("ten"));
        assert!(is_cron("0 9 * * mon-fri") && is_cron("@daily") && !is_cron("@sometimes") && !is_cron("* *"));
        assert!(is_cron("*/15 0-6 1,15 jan-mar 0") && is_cron("0 22 * * 1-5"));
        assert!(!is_cron("99 99 * * *") && !is_cron("0 9 * * funday") && !is_cron("0 9 32 * *") && !is_cron("*/0 * * * *"));
        assert!(is_aws_id("subnet-0abc12", "subnet") && !is_aws_id("subnet-", "subnet") && !is_aws_id("sg-ABC", "sg"));
    }
}

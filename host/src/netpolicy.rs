//! Destination policy for requests the gateway makes on its own behalf (webhooks, the proxy-pool API): allow
//! and deny lists of hosts, domain suffixes, IPs, CIDRs and address classes, checked against the *resolved*
//! addresses.
//!
//! Entries: `*` (anything), `hooks.example.com` (that host), `.example.com` or `*.example.com` (the domain and
//! its subdomains), `10.1.2.3`, `10.0.0.0/8`, `fd00::/8`, and the classes `loopback`, `private`,
//! `link-local`, `metadata` (cloud metadata addresses), `reserved` (multicast, broadcast, 240/4).
//!
//! A destination passes when
//! 1. no deny entry matches its host name or any of its addresses;
//! 2. if the allow list is not empty, an allow entry matches its host name, or every address (exclusive
//!    allow list);
//! 3. every address outside the public internet (a class above) is allowed explicitly by an IP, CIDR or class
//!    entry of the allow list, or by the use's default (the pool API allows `loopback`). A host name entry never
//!    lets a name resolve to a private address: that is how DNS rebinding is stopped.
//!
//! The check runs twice for a host name: once before sending (so a denial is reported as such) and in the
//! HTTP client's resolver ([`NetPolicy::resolver`]), so the connection goes only to addresses that passed,
//! even when the name resolves differently the second time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use thiserror::Error;

/// Address classes outside the public internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Loopback,
    Private,
    LinkLocal,
    Metadata,
    Reserved,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Loopback => "loopback",
            Class::Private => "private",
            Class::LinkLocal => "link-local",
            Class::Metadata => "metadata",
            Class::Reserved => "reserved",
        }
    }

    fn parse(s: &str) -> Option<Class> {
        Some(match s {
            "loopback" => Class::Loopback,
            "private" => Class::Private,
            "link-local" => Class::LinkLocal,
            "metadata" => Class::Metadata,
            "reserved" => Class::Reserved,
            _ => return None,
        })
    }
}

/// The class of a non-public address (the most specific one: a metadata address is not just link-local).
pub fn classify(ip: IpAddr) -> Option<Class> {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4 == Ipv4Addr::new(169, 254, 169, 254) || v4 == Ipv4Addr::new(100, 100, 100, 200) {
                Some(Class::Metadata)
            } else if v4.is_loopback() || o[0] == 0 {
                // 0.0.0.0/8 reaches the local host on Linux.
                Some(Class::Loopback)
            } else if v4.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
                // 100.64/10: carrier-grade NAT, not the public internet either.
                Some(Class::Private)
            } else if v4.is_link_local() {
                Some(Class::LinkLocal)
            } else if v4.is_multicast() || v4.is_broadcast() || o[0] >= 240 {
                Some(Class::Reserved)
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                Some(Class::Metadata)
            } else if v6.is_loopback() || v6.is_unspecified() {
                Some(Class::Loopback)
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Some(Class::Private)
            } else if (s[0] & 0xffc0) == 0xfe80 {
                Some(Class::LinkLocal)
            } else if v6.is_multicast() {
                Some(Class::Reserved)
            } else {
                None
            }
        }
    }
}

/// `::ffff:a.b.c.d` is the IPv4 address it carries.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Rule {
    Any,
    Host(String),
    /// Without the leading dot: matches the domain itself and every subdomain.
    Suffix(String),
    Net(IpNet),
    Class(Class),
}

impl Rule {
    fn parse(raw: &str) -> Result<Rule, String> {
        let s = raw.trim().to_ascii_lowercase();
        if s == "*" {
            return Ok(Rule::Any);
        }
        if let Some(c) = Class::parse(&s) {
            return Ok(Rule::Class(c));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Rule::Net(IpNet::from(canonical(ip))));
        }
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Rule::Net(net.trunc()));
        }
        let (suffix, name) = match s.strip_prefix("*.").or_else(|| s.strip_prefix('.')) {
            Some(rest) => (true, rest),
            None => (false, s.as_str()),
        };
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(format!(
                "`{raw}` is not a host, domain suffix (.example.com), IP, CIDR, `*` or class \
                 (loopback, private, link-local, metadata, reserved)"
            ));
        }
        Ok(if suffix {
            Rule::Suffix(name.to_string())
        } else {
            Rule::Host(name.to_string())
        })
    }

    fn matches_name(&self, host: &str) -> bool {
        match self {
            Rule::Any => true,
            Rule::Host(h) => h == host,
            Rule::Suffix(d) => {
                host == d
                    || (host.len() > d.len()
                        && host.ends_with(d.as_str())
                        && host.as_bytes()[host.len() - d.len() - 1] == b'.')
            }
            _ => false,
        }
    }

    /// Address entries (IP, CIDR, class, `*`).
    fn matches_ip(&self, ip: IpAddr) -> bool {
        match self {
            Rule::Any => true,
            Rule::Net(n) => n.contains(&ip),
            Rule::Class(c) => classify(ip) == Some(*c),
            _ => false,
        }
    }

    /// Entries that permit a non-public address: only explicit IPs, CIDRs and classes (not `*`, not names).
    fn permits_special(&self, ip: IpAddr) -> bool {
        match self {
            Rule::Net(n) => n.contains(&ip),
            Rule::Class(c) => classify(ip) == Some(*c),
            _ => false,
        }
    }
}

/// A bad list entry; the caller names the setting.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{0}")]
pub struct BadEntry(pub String);

/// Why a destination was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Denied {
    #[error("{host} is on the deny list")]
    DenyList { host: String },
    #[error("{host} is not on the allow list")]
    NotAllowed { host: String },
    #[error("{host} resolves to a {class} address ({ip}), which is not allowed explicitly")]
    Special {
        host: String,
        class: &'static str,
        ip: IpAddr,
    },
    #[error("not an http(s) URL with a host")]
    BadUrl,
}

/// A check that could not be made, or a refusal.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CheckError {
    #[error("destination denied: {0}")]
    Denied(#[from] Denied),
    /// Name resolution failed: like a connect error, worth retrying.
    #[error("cannot resolve {0}")]
    Resolve(String),
}

/// The allow/deny policy of one use (webhooks, pool API).
#[derive(Debug, Clone, Default)]
pub struct NetPolicy {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
    /// Classes this use allows without an allow entry.
    default_classes: Vec<Class>,
}

impl NetPolicy {
    /// Builds a policy; `default_classes` are the non-public classes the use allows by default.
    pub fn new(
        allow: &[String],
        deny: &[String],
        default_classes: &[Class],
    ) -> Result<NetPolicy, BadEntry> {
        let parse = |list: &[String]| -> Result<Vec<Rule>, BadEntry> {
            list.iter()
                .map(|e| Rule::parse(e).map_err(BadEntry))
                .collect()
        };
        Ok(NetPolicy {
            allow: parse(allow)?,
            deny: parse(deny)?,
            default_classes: default_classes.to_vec(),
        })
    }

    /// Checks a host (name or IP literal, lower case, no brackets) and the addresses it resolved to.
    pub fn check(&self, host: &str, ips: &[IpAddr]) -> Result<(), Denied> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let is_name = host.parse::<IpAddr>().is_err();
        let ips: Vec<IpAddr> = ips.iter().copied().map(canonical).collect();
        let name_hit = |r: &Rule| is_name && r.matches_name(&host);
        if self
            .deny
            .iter()
            .any(|r| name_hit(r) || ips.iter().any(|ip| r.matches_ip(*ip)))
        {
            return Err(Denied::DenyList { host });
        }
        let all_ips_allowed = !ips.is_empty()
            && ips
                .iter()
                .all(|ip| self.allow.iter().any(|r| r.matches_ip(*ip)));
        let allowed = self.allow.is_empty() || self.allow.iter().any(name_hit) || all_ips_allowed;
        if !allowed {
            return Err(Denied::NotAllowed { host });
        }
        for ip in &ips {
            if let Some(class) = classify(*ip) {
                // (A deny entry matching this address already returned above.)
                let ok = self.default_classes.contains(&class)
                    || self.allow.iter().any(|r| r.permits_special(*ip));
                if !ok {
                    return Err(Denied::Special {
                        host,
                        class: class.as_str(),
                        ip: *ip,
                    });
                }
            }
        }
        Ok(())
    }

    /// Resolves the URL's host (unless it is an IP literal) and checks it.
    pub async fn check_url(&self, url: &reqwest::Url) -> Result<(), CheckError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Denied::BadUrl.into());
        }
        let port = url.port_or_known_default().unwrap_or(80);
        let (host, ips) = match url.host() {
            Some(url::Host::Ipv4(ip)) => (ip.to_string(), vec![IpAddr::V4(ip)]),
            Some(url::Host::Ipv6(ip)) => (ip.to_string(), vec![IpAddr::V6(ip)]),
            Some(url::Host::Domain(d)) => {
                let ips = resolve(d, port)
                    .await
                    .map_err(|e| CheckError::Resolve(format!("{d}: {e}")))?;
                (d.to_string(), ips)
            }
            None => return Err(Denied::BadUrl.into()),
        };
        self.check(&host, &ips).map_err(CheckError::from)
    }

    /// A resolver for `reqwest::ClientBuilder::dns_resolver` that hands the client only addresses that pass.
    pub fn resolver(self: &Arc<Self>) -> Arc<PolicyResolver> {
        Arc::new(PolicyResolver(self.clone()))
    }
}

async fn resolve(host: &str, port: u16) -> std::io::Result<Vec<IpAddr>> {
    let mut ips: Vec<IpAddr> = tokio::net::lookup_host((host, port))
        .await?
        .map(|a| a.ip())
        .collect();
    ips.dedup();
    if ips.is_empty() {
        return Err(std::io::Error::other("no addresses"));
    }
    Ok(ips)
}

/// Resolves with the system resolver, then applies the policy to the answer.
pub struct PolicyResolver(Arc<NetPolicy>);

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let ips = resolve(&host, 0).await?;
            // As a `CheckError`, so the client's error text says "destination denied".
            policy.check(&host, &ips).map_err(CheckError::Denied)?;
            let addrs: reqwest::dns::Addrs =
                Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(addrs)
        })
    }
}

/// A destination URL for logs and admin answers: scheme, host and port only. Webhook paths and queries are
/// often the secret itself (Slack, Discord), and user info always is.
pub fn mask_destination(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let host = match u.host() {
                Some(h) => h.to_string(),
                None => return "****".into(),
            };
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let rest = if u.path() != "/" || u.query().is_some() {
                "/****"
            } else {
                "/"
            };
            format!("{}://{host}{port}{rest}", u.scheme())
        }
        Err(_) => "****".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(allow: &[&str], deny: &[&str], defaults: &[Class]) -> NetPolicy {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        NetPolicy::new(&v(allow), &v(deny), defaults).unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn classes() {
        assert_eq!(classify(ip("127.0.0.1")), Some(Class::Loopback));
        assert_eq!(classify(ip("0.0.0.0")), Some(Class::Loopback));
        assert_eq!(classify(ip("::1")), Some(Class::Loopback));
        assert_eq!(classify(ip("::ffff:127.0.0.1")), Some(Class::Loopback));
        assert_eq!(classify(ip("10.2.3.4")), Some(Class::Private));
        assert_eq!(classify(ip("172.20.0.1")), Some(Class::Private));
        assert_eq!(classify(ip("192.168.1.1")), Some(Class::Private));
        assert_eq!(classify(ip("100.64.0.1")), Some(Class::Private));
        assert_eq!(classify(ip("fd12::1")), Some(Class::Private));
        assert_eq!(classify(ip("169.254.1.1")), Some(Class::LinkLocal));
        assert_eq!(classify(ip("fe80::1")), Some(Class::LinkLocal));
        assert_eq!(classify(ip("169.254.169.254")), Some(Class::Metadata));
        assert_eq!(classify(ip("fd00:ec2::254")), Some(Class::Metadata));
        assert_eq!(classify(ip("224.0.0.1")), Some(Class::Reserved));
        assert_eq!(classify(ip("255.255.255.255")), Some(Class::Reserved));
        assert_eq!(classify(ip("93.184.216.34")), None);
        assert_eq!(classify(ip("2606:4700::1111")), None);
        assert_eq!(classify(ip("172.32.0.1")), None);
    }

    #[test]
    fn default_denies_non_public_addresses() {
        let webhook = p(&[], &[], &[]);
        assert!(webhook
            .check("hooks.example.com", &[ip("93.184.216.34")])
            .is_ok());
        for a in [
            "127.0.0.1",
            "10.0.0.1",
            "169.254.169.254",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            let e = webhook.check("h.example", &[ip(a)]).unwrap_err();
            assert!(matches!(e, Denied::Special { .. }), "{a}: {e}");
        }
        // One bad address among good ones is enough (the client could pick it).
        assert!(webhook
            .check("h.example", &[ip("93.184.216.34"), ip("127.0.0.1")])
            .is_err());
        // The pool API allows loopback by default, not private addresses.
        let pool = p(&[], &[], &[Class::Loopback]);
        assert!(pool.check("127.0.0.1", &[ip("127.0.0.1")]).is_ok());
        assert!(pool.check("localhost", &[ip("::1")]).is_ok());
        assert!(pool.check("10.0.0.1", &[ip("10.0.0.1")]).is_err());
        // ...unless the deny list takes it back.
        let pool = p(&[], &["loopback"], &[Class::Loopback]);
        assert!(matches!(
            pool.check("127.0.0.1", &[ip("127.0.0.1")]),
            Err(Denied::DenyList { .. })
        ));
    }

    #[test]
    fn allow_list_is_exclusive_and_explicit_for_special_addresses() {
        let pol = p(&["127.0.0.1", ".example.com"], &[], &[]);
        assert!(pol.check("127.0.0.1", &[ip("127.0.0.1")]).is_ok());
        assert!(pol.check("a.b.example.com", &[ip("93.184.216.34")]).is_ok());
        assert!(pol.check("example.com", &[ip("93.184.216.34")]).is_ok());
        assert!(matches!(
            pol.check("badexample.com", &[ip("93.184.216.34")]),
            Err(Denied::NotAllowed { .. })
        ));
        assert!(matches!(
            pol.check("other.org", &[ip("93.184.216.34")]),
            Err(Denied::NotAllowed { .. })
        ));
        // DNS rebinding: an allowed name that resolves to a private address is still refused.
        assert!(matches!(
            pol.check("evil.example.com", &[ip("10.0.0.5")]),
            Err(Denied::Special { .. })
        ));
        // 127.0.0.2 is loopback but not the allowed address.
        assert!(pol.check("127.0.0.2", &[ip("127.0.0.2")]).is_err());
        // A CIDR or class entry allows a whole range.
        let pol = p(&["10.0.0.0/8", "loopback"], &[], &[]);
        assert!(pol.check("10.9.9.9", &[ip("10.9.9.9")]).is_ok());
        assert!(pol.check("localhost", &[ip("127.0.0.1")]).is_ok());
        assert!(pol.check("192.168.0.1", &[ip("192.168.0.1")]).is_err());
        // `*` allows public destinations, not private ones.
        let pol = p(&["*"], &[], &[]);
        assert!(pol.check("x.org", &[ip("1.1.1.1")]).is_ok());
        assert!(pol.check("x.org", &[ip("127.0.0.1")]).is_err());
    }

    #[test]
    fn deny_wins() {
        let pol = p(
            &["*", "loopback"],
            &["*.internal.example", "1.2.3.0/24"],
            &[],
        );
        assert!(matches!(
            pol.check("a.internal.example", &[ip("5.5.5.5")]),
            Err(Denied::DenyList { .. })
        ));
        assert!(matches!(
            pol.check("ok.example", &[ip("1.2.3.4")]),
            Err(Denied::DenyList { .. })
        ));
        assert!(pol.check("ok.example", &[ip("5.5.5.5")]).is_ok());
        let pol = p(&[], &["hooks.example.com"], &[]);
        assert!(pol.check("HOOKS.example.com.", &[ip("5.5.5.5")]).is_err());
        assert!(pol.check("x.hooks.example.com", &[ip("5.5.5.5")]).is_ok());
    }

    #[test]
    fn bad_entries_are_rejected() {
        for bad in [
            "",
            "a b",
            "http://x",
            "10.0.0.0/33",
            "ex ample.com",
            "*.",
            "a..b",
        ] {
            assert!(
                NetPolicy::new(&[bad.to_string()], &[], &[]).is_err(),
                "{bad:?} accepted"
            );
        }
        for good in [
            "*",
            "loopback",
            "::1",
            "fd00::/8",
            "*.x.io",
            ".x.io",
            "x-y.io",
            "LOCALHOST",
        ] {
            assert!(
                NetPolicy::new(&[good.to_string()], &[], &[]).is_ok(),
                "{good}"
            );
        }
    }

    #[tokio::test]
    async fn check_url_resolves_names() {
        let pol = p(&[], &[], &[]);
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(matches!(
            pol.check_url(&u("http://localhost:9/x")).await,
            Err(CheckError::Denied(Denied::Special { .. }))
        ));
        assert!(matches!(
            pol.check_url(&u("http://[::1]:9/x")).await,
            Err(CheckError::Denied(Denied::Special { .. }))
        ));
        assert!(pol.check_url(&u("http://93.184.216.34/")).await.is_ok());
        assert!(matches!(
            pol.check_url(&u("ftp://93.184.216.34/")).await,
            Err(CheckError::Denied(Denied::BadUrl))
        ));
        let open = p(&["127.0.0.1"], &[], &[]);
        assert!(open.check_url(&u("http://127.0.0.1:9/")).await.is_ok());
    }

    #[test]
    fn destinations_are_masked() {
        assert_eq!(
            mask_destination("https://u:pw@hooks.slack.com/services/T/B/secret?x=1"),
            "https://hooks.slack.com/****"
        );
        assert_eq!(
            mask_destination("http://127.0.0.1:8080/"),
            "http://127.0.0.1:8080/"
        );
        assert_eq!(mask_destination("not a url"), "****");
    }
}

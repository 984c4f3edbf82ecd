//! Where the service may connect: a destination policy applied to every address it would
//! connect to, after DNS resolution and again on every redirect hop, so that a payload cannot
//! make it fetch from or post to the cloud metadata services or, unless allowed, internal
//! networks.
//!
//! Names are resolved by [`PolicyResolver`], which the HTTP client uses for every new
//! connection (redirect hops included) and which drops the addresses the policy refuses; a name
//! with no address left fails with [`Refused`] before any connection is attempted. URLs whose
//! host is an IP address skip DNS, so [`check_url`] checks them before the first request and on
//! each redirect hop. Link-local addresses (169.254.0.0/16, fe80::/10, where the metadata
//! services live) and AWS's IPv6 metadata address are refused whatever the policy.

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Which addresses the service may connect to. Link-local and metadata addresses never.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Destinations {
    /// Only public (globally routed) addresses.
    Public,
    /// Public addresses and private networks (10/8, 172.16/12, 192.168/16, 100.64/10,
    /// fc00::/7): the Lambda function and the queue worker, which run inside a VPC.
    #[default]
    Private,
    /// Also this machine (loopback): local development, where concrexit runs on localhost.
    Local,
}

impl Destinations {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Private => "private",
            Self::Local => "local",
        }
    }
}

impl FromStr for Destinations {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "public" => Ok(Self::Public),
            "private" => Ok(Self::Private),
            "local" => Ok(Self::Local),
            other => Err(format!(
                "destinations must be public, private or local, not {other:?}"
            )),
        }
    }
}

impl fmt::Display for Destinations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A destination the policy does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("destination refused: {0}")]
pub struct Refused(pub String);

/// What kind of address an IP is, as far as the policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Never allowed: link-local (the metadata services), multicast, broadcast.
    Forbidden(&'static str),
    Loopback,
    Private,
    Public,
}

/// AWS's instance metadata service over IPv6 (in the unique-local range).
const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

fn kind_v4(ip: Ipv4Addr) -> Kind {
    let [a, b, ..] = ip.octets();
    if ip.is_link_local() {
        Kind::Forbidden("a link-local address (cloud metadata services live there)")
    } else if ip.is_multicast() || ip.is_broadcast() {
        Kind::Forbidden("a multicast or broadcast address")
    } else if ip.is_loopback() || ip.is_unspecified() || a == 0 {
        // 0.0.0.0/8 reaches this machine on Linux.
        Kind::Loopback
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        Kind::Private
    } else {
        Kind::Public
    }
}

fn kind(ip: IpAddr) -> Kind {
    match ip {
        IpAddr::V4(v4) => kind_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return kind_v4(v4);
            }
            let first = v6.segments()[0];
            if v6 == AWS_METADATA_V6 {
                Kind::Forbidden("AWS's IPv6 metadata address")
            } else if first & 0xffc0 == 0xfe80 {
                Kind::Forbidden("a link-local address (cloud metadata services live there)")
            } else if v6.is_multicast() {
                Kind::Forbidden("a multicast address")
            } else if v6.is_loopback() || v6.is_unspecified() {
                Kind::Loopback
            } else if first & 0xfe00 == 0xfc00 {
                Kind::Private
            } else {
                Kind::Public
            }
        }
    }
}

/// Whether the policy allows connecting to `ip`; the error says why not.
pub fn check_ip(policy: Destinations, ip: IpAddr) -> Result<(), Refused> {
    let refused = |what: &str| Err(Refused(format!("{ip} is {what}")));
    match (kind(ip), policy) {
        (Kind::Forbidden(what), _) => refused(what),
        (Kind::Loopback, Destinations::Public | Destinations::Private) => {
            refused(&format!("on this machine (allowed destinations: {policy})"))
        }
        (Kind::Private, Destinations::Public) => refused(&format!(
            "a private-network address (allowed destinations: {policy})"
        )),
        _ => Ok(()),
    }
}

/// Checks a URL before it is requested: http or https only, and an IP-address host must be
/// allowed (names are checked when they are resolved).
pub fn check_url(policy: Destinations, url: &Url) -> Result<(), Refused> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refused(format!(
            "only http and https URLs are fetched, not {}",
            url.scheme()
        )));
    }
    match url.host() {
        Some(url::Host::Ipv4(ip)) => check_ip(policy, IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => check_ip(policy, IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => Ok(()),
        None => Err(Refused("the URL has no host".to_string())),
    }
}

/// Resolves names with an inner resolver and keeps only the addresses the policy allows.
#[derive(Clone)]
pub struct PolicyResolver {
    policy: Destinations,
    inner: Arc<dyn Resolve>,
}

impl PolicyResolver {
    pub fn new(policy: Destinations, inner: Arc<dyn Resolve>) -> Self {
        Self { policy, inner }
    }
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let host = name.as_str().to_string();
        let lookup = self.inner.resolve(name);
        Box::pin(async move {
            let all: Vec<SocketAddr> = lookup.await?.collect();
            let mut refusals = Vec::new();
            let allowed: Vec<SocketAddr> = all
                .into_iter()
                .filter(|addr| match check_ip(policy, addr.ip()) {
                    Ok(()) => true,
                    Err(Refused(why)) => {
                        refusals.push(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = if refusals.is_empty() {
                    format!("{host} has no address")
                } else {
                    format!("{host} resolves to {}", refusals.join(", "))
                };
                return Err(Box::new(Refused(why)) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The system's resolver (getaddrinfo, on a blocking thread).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The [`Refused`] somewhere in an error's chain of sources, if any.
pub fn find_refusal<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a Refused> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(refused) = error.downcast_ref::<Refused>() {
            return Some(refused);
        }
        current = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(policy: Destinations, ip: &str) -> bool {
        check_ip(policy, ip.parse().unwrap()).is_ok()
    }

    #[test]
    fn metadata_and_link_local_are_never_allowed() {
        for ip in [
            "169.254.169.254",
            "169.254.170.2",
            "fe80::1",
            "febf::1",
            "::ffff:169.254.169.254",
            "fd00:ec2::254",
            "224.0.0.1",
            "255.255.255.255",
            "ff02::1",
        ] {
            for policy in [
                Destinations::Public,
                Destinations::Private,
                Destinations::Local,
            ] {
                assert!(!allowed(policy, ip), "{policy} allows {ip}");
            }
        }
    }

    #[test]
    fn each_policy_allows_its_ranges() {
        use Destinations::*;
        for (ip, public, private, local) in [
            ("93.184.216.34", true, true, true),
            ("2606:4700::1", true, true, true),
            ("10.1.2.3", false, true, true),
            ("172.20.0.5", false, true, true),
            ("192.168.1.1", false, true, true),
            ("100.64.0.1", false, true, true),
            ("fd12::1", false, true, true),
            ("127.0.0.1", false, false, true),
            ("::1", false, false, true),
            ("0.0.0.0", false, false, true),
            ("::ffff:127.0.0.1", false, false, true),
        ] {
            assert_eq!(allowed(Public, ip), public, "public {ip}");
            assert_eq!(allowed(Private, ip), private, "private {ip}");
            assert_eq!(allowed(Local, ip), local, "local {ip}");
        }
    }

    #[test]
    fn urls_with_address_hosts_are_checked() {
        let check = |url: &str| check_url(Destinations::Local, &Url::parse(url).unwrap());
        assert!(check("http://169.254.169.254/latest/meta-data/").is_err());
        // The decimal form of 169.254.169.254 is the same host.
        assert!(check("http://2852039166/").is_err());
        assert!(check("http://[fe80::1]/").is_err());
        assert!(check("ftp://example.org/").is_err());
        assert!(check("http://127.0.0.1:8000/").is_ok());
        assert!(check("https://example.org/").is_ok());
    }
}

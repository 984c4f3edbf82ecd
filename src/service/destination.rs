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
//!
//! An IPv6 address that carries an IPv4 one (IPv4-mapped `::ffff:a.b.c.d`, NAT64's
//! `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4's `2002::/16`) is judged by that IPv4 address, so
//! that DNS64 cannot turn a private address into a "public" one. The special-purpose ranges of
//! IANA's registries that are not globally reachable (documentation, benchmarking, reserved,
//! IETF protocol assignments, ...) are allowed only by the `local` policy.

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use ipnet::{Ipv4Net, Ipv6Net};
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Which addresses the service may connect to. Link-local and metadata addresses never.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Destinations {
    /// Only public addresses: globally reachable, as IANA's special-purpose registries say.
    Public,
    /// Public addresses and private networks (10/8, 172.16/12, 192.168/16, 100.64/10,
    /// fc00::/7): the Lambda function and the queue worker, which run inside a VPC.
    #[default]
    Private,
    /// Also this machine (loopback) and the special-purpose ranges that are not globally
    /// reachable: local development, where concrexit runs on localhost.
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

/// What kind of address an IP is, as far as the policy cares; the policies allow the kinds
/// from the end of this list: `local` all but `Forbidden`, `private` the last two, `public`
/// the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Never allowed: link-local (the metadata services), multicast, broadcast.
    Forbidden(&'static str),
    Loopback,
    /// A special-purpose range that is neither globally reachable nor a private network.
    Special(&'static str),
    Private,
    Public,
}

/// AWS's instance metadata service over IPv6 (in the unique-local range).
const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6(first: u16, second: u16, third: u16, len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(Ipv6Addr::new(first, second, third, 0, 0, 0, 0, 0), len)
}

/// The entries of IANA's IPv4 Special-Purpose Address Registry
/// (<https://www.iana.org/assignments/iana-ipv4-special-registry/>) that are not globally
/// reachable, other than those [`kind_v4`] names on its own (0/8, loopback, link-local, the
/// private networks, the shared 100.64/10, the limited broadcast address).
const SPECIAL_V4: [(Ipv4Net, &str); 7] = [
    (
        v4(192, 0, 0, 0, 24),
        "an IETF protocol assignment (RFC 6890)",
    ),
    (
        v4(192, 0, 2, 0, 24),
        "a documentation address (TEST-NET-1, RFC 5737)",
    ),
    (
        v4(192, 88, 99, 0, 24),
        "the deprecated 6to4 relay anycast (RFC 7526)",
    ),
    (v4(198, 18, 0, 0, 15), "a benchmarking address (RFC 2544)"),
    (
        v4(198, 51, 100, 0, 24),
        "a documentation address (TEST-NET-2, RFC 5737)",
    ),
    (
        v4(203, 0, 113, 0, 24),
        "a documentation address (TEST-NET-3, RFC 5737)",
    ),
    (
        v4(240, 0, 0, 0, 4),
        "a reserved address (240.0.0.0/4, RFC 1112)",
    ),
];

/// The registry's globally reachable entries inside [`SPECIAL_V4`]'s ranges.
const GLOBAL_V4: [Ipv4Net; 2] = [
    v4(192, 0, 0, 9, 32),  // Port Control Protocol anycast (RFC 7723)
    v4(192, 0, 0, 10, 32), // Traversal Using Relays around NAT anycast (RFC 8155)
];

/// The entries of IANA's IPv6 Special-Purpose Address Registry
/// (<https://www.iana.org/assignments/iana-ipv6-special-registry/>) inside global unicast
/// (2000::/3) that are not globally reachable. Outside 2000::/3, everything that [`kind`] does
/// not name on its own (loopback, unspecified, the IPv4 translations, unique-local,
/// link-local, multicast) is reserved by the IETF, the registry's 100::/64, 5f00::/16 and the
/// deprecated IPv4-compatible ::/96 among them.
const SPECIAL_V6: [(Ipv6Net, &str); 3] = [
    (
        v6(0x2001, 0, 0, 23),
        "an IETF protocol assignment (2001::/23, RFC 2928; Teredo among them)",
    ),
    (
        v6(0x2001, 0xdb8, 0, 32),
        "a documentation address (RFC 3849)",
    ),
    (v6(0x3fff, 0, 0, 20), "a documentation address (RFC 9637)"),
];

/// The registry's globally reachable entries inside [`SPECIAL_V6`]'s ranges.
const GLOBAL_V6: [Ipv6Net; 7] = [
    Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 1, 0, 0, 0, 0, 0, 1), 128), // PCP anycast
    Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 1, 0, 0, 0, 0, 0, 2), 128), // TURN anycast
    Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 1, 0, 0, 0, 0, 0, 3), 128), // DNS-SD SRP anycast
    v6(0x2001, 3, 0, 32),                                                 // AMT
    v6(0x2001, 4, 0x112, 48),                                             // AS112-v6
    v6(0x2001, 0x20, 0, 28),                                              // ORCHIDv2
    v6(0x2001, 0x30, 0, 28),                                              // Drone Remote ID
];

/// NAT64's well-known prefix (RFC 6052): the IPv4 address in the last 32 bits. DNS64 answers
/// such an address for a name with only an A record, private or not.
const NAT64_WELL_KNOWN: Ipv6Net = v6(0x64, 0xff9b, 0, 96);

/// NAT64's local-use prefix (RFC 8215), taken here with the IPv4 address in the last 32 bits
/// as in the well-known prefix; never globally reachable itself.
const NAT64_LOCAL_USE: Ipv6Net = v6(0x64, 0xff9b, 1, 48);

/// 6to4 (RFC 3056): the IPv4 address in bits 16 to 47.
const SIX_TO_FOUR: Ipv6Net = v6(0x2002, 0, 0, 16);

/// IPv6's global unicast space; the rest (but for the ranges named above) is reserved.
const GLOBAL_UNICAST: Ipv6Net = v6(0x2000, 0, 0, 3);

fn special<N: Copy>(
    table: &[(N, &'static str)],
    global: &[N],
    contains: impl Fn(N) -> bool,
) -> Option<&'static str> {
    let (_, what) = table.iter().find(|(net, _)| contains(*net))?;
    (!global.iter().any(|net| contains(*net))).then_some(*what)
}

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
    } else if let Some(what) = special(&SPECIAL_V4, &GLOBAL_V4, |net| net.contains(&ip)) {
        Kind::Special(what)
    } else {
        Kind::Public
    }
}

/// The IPv4 address in the last 32 bits of `ip`.
fn last_32_bits(ip: Ipv6Addr) -> Ipv4Addr {
    let [.., a, b, c, d] = ip.octets();
    Ipv4Addr::new(a, b, c, d)
}

fn kind(ip: IpAddr) -> Kind {
    let v6 = match ip {
        IpAddr::V4(v4) => return kind_v4(v4),
        IpAddr::V6(v6) => v6,
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return kind_v4(v4);
    }
    if NAT64_WELL_KNOWN.contains(&v6) {
        return kind_v4(last_32_bits(v6));
    }
    if NAT64_LOCAL_USE.contains(&v6) {
        return match kind_v4(last_32_bits(v6)) {
            Kind::Public => Kind::Private,
            other => other,
        };
    }
    if SIX_TO_FOUR.contains(&v6) {
        let [_, _, a, b, c, d, ..] = v6.octets();
        return kind_v4(Ipv4Addr::new(a, b, c, d));
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
    } else if !GLOBAL_UNICAST.contains(&v6) {
        Kind::Special("reserved by the IETF (outside global unicast, 2000::/3)")
    } else if let Some(what) = special(&SPECIAL_V6, &GLOBAL_V6, |net| net.contains(&v6)) {
        Kind::Special(what)
    } else {
        Kind::Public
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
        (Kind::Special(what), Destinations::Public | Destinations::Private) => refused(&format!(
            "{what}, not globally reachable (allowed destinations: {policy})"
        )),
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
    fn addresses_carrying_ipv4_are_judged_by_it() {
        use Destinations::*;
        for (ip, public, private, local) in [
            // NAT64's well-known prefix, as DNS64 answers for 10.1.2.3, 127.0.0.1, ...
            ("64:ff9b::a01:203", false, true, true),
            ("64:ff9b::7f00:1", false, false, true),
            ("64:ff9b::a9fe:a9fe", false, false, false),
            ("64:ff9b::c612:1", false, false, true),
            ("64:ff9b::5db8:d822", true, true, true),
            // The local-use prefix is never public, whatever it carries.
            ("64:ff9b:1::5db8:d822", false, true, true),
            ("64:ff9b:1::a9fe:a9fe", false, false, false),
            // 6to4 of 10.0.0.1 and of a public address.
            ("2002:a00:1::1", false, true, true),
            ("2002:5db8:d822::1", true, true, true),
        ] {
            assert_eq!(allowed(Public, ip), public, "public {ip}");
            assert_eq!(allowed(Private, ip), private, "private {ip}");
            assert_eq!(allowed(Local, ip), local, "local {ip}");
        }
    }

    #[test]
    fn special_purpose_ranges_are_not_public() {
        use Destinations::*;
        for ip in [
            "192.0.0.1",
            "192.0.0.170",
            "192.0.2.1",
            "192.88.99.1",
            "198.18.0.1",
            "198.19.255.254",
            "198.51.100.7",
            "203.0.113.9",
            "240.0.0.1",
            "255.255.255.254",
            "100::1",
            "5f00::1",
            "::7f00:1",
            "2001::1",
            "2001:2::1",
            "2001:db8::1",
            "3fff::1",
        ] {
            assert!(!allowed(Public, ip), "public allows {ip}");
            assert!(!allowed(Private, ip), "private allows {ip}");
            assert!(allowed(Local, ip), "local refuses {ip}");
        }
        // The registry's globally reachable exceptions, and neighbours of the ranges.
        for ip in [
            "192.0.0.9",
            "192.0.0.10",
            "192.0.1.1",
            "198.17.255.255",
            "198.20.0.1",
            "2001:1::1",
            "2001:3::1",
            "2001:4:112::1",
            "2001:20::1",
            "2001:200::1",
            "2400:cb00::1",
        ] {
            assert!(allowed(Public, ip), "public refuses {ip}");
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

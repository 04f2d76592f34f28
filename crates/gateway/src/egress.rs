//! Where workflow tools may connect: every address a tool's host resolves to, and every
//! literal address in a tool's URL, is classified before the connection is made.
//!
//! - **Forbidden always:** unspecified, "this network", link-local (cloud metadata at
//!   169.254.169.254), the metadata addresses outside it (`100.100.100.200`, `fd00:ec2::254`),
//!   multicast, broadcast and the reserved 240/4, documentation (`2001:db8::/32`,
//!   `3fff::/20`), discard-only and dummy prefixes, SRv6 SIDs (`5f00::/16`).
//! - **Private** (refused with `SWITCHYARD_TOOLS_PUBLIC_ONLY=1`): loopback, RFC 1918,
//!   carrier-grade NAT (100.64/10), benchmarking (198.18/15), IETF protocol assignments
//!   (192.0.0/24, 2001::/23), unique-local and site-local IPv6.
//!
//! IPv6 forms that carry an IPv4 address are judged by that address: IPv4-mapped
//! (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`, `64:ff9b:1::/48`)
//! and 6to4 (`2002::/16`). The check runs in the HTTP client's resolver ([`GuardedResolver`]),
//! so the address checked is the address connected to: a name that resolves differently the
//! second time (DNS rebinding) gains nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What an address is to a tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Never reachable by tools; the reason names the range.
    Forbidden(&'static str),
    /// Reachable unless tools are limited to public addresses.
    Private(&'static str),
    Public,
}

/// Classifies an address (see the module docs).
pub fn classify(ip: IpAddr) -> Reach {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            // The local-use NAT64 prefix is never globally reachable: its translator is a
            // device of the local network, whatever address it translates to.
            Some(v4) if is_local_nat64(v6) => match classify_v4(v4) {
                Reach::Public => Reach::Private("local-use NAT64 (64:ff9b:1::/48)"),
                reach => reach,
            },
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], bits: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn classify_v4(ip: Ipv4Addr) -> Reach {
    const FORBIDDEN: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "\"this network\" / unspecified"),
        ([169, 254, 0, 0], 16, "link-local (cloud metadata)"),
        ([100, 100, 100, 200], 32, "a cloud metadata address"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([240, 0, 0, 0], 4, "reserved or broadcast"),
    ];
    const PRIVATE: &[([u8; 4], u32, &str)] = &[
        ([127, 0, 0, 0], 8, "loopback"),
        ([10, 0, 0, 0], 8, "private (RFC 1918)"),
        ([172, 16, 0, 0], 12, "private (RFC 1918)"),
        ([192, 168, 0, 0], 16, "private (RFC 1918)"),
        ([100, 64, 0, 0], 10, "carrier-grade NAT"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([192, 0, 0, 0], 24, "IETF protocol assignments"),
    ];
    if let Some((_, _, why)) = FORBIDDEN.iter().find(|(n, b, _)| in_v4(ip, *n, *b)) {
        return Reach::Forbidden(why);
    }
    if let Some((_, _, why)) = PRIVATE.iter().find(|(n, b, _)| in_v4(ip, *n, *b)) {
        return Reach::Private(why);
    }
    Reach::Public
}

fn is_local_nat64(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1
}

/// The IPv4 address an IPv6 form carries, if it is one of those forms.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let last32 = || Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]));
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    // IPv4-compatible (deprecated): ::a.b.c.d, but not :: and ::1.
    if s[..6] == [0; 6] && (s[6] != 0 || s[7] > 1) {
        return Some(last32());
    }
    // NAT64: the well-known prefix and the local-use one.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) {
        return Some(last32());
    }
    // 6to4: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD.
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::from((u32::from(s[1]) << 16) | u32::from(s[2])));
    }
    None
}

fn classify_v6(ip: Ipv6Addr) -> Reach {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Reach::Forbidden("unspecified");
    }
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Reach::Forbidden("a cloud metadata address");
    }
    if s[0] & 0xff00 == 0xff00 {
        return Reach::Forbidden("multicast");
    }
    if s[0] & 0xffc0 == 0xfe80 {
        return Reach::Forbidden("link-local");
    }
    if s[..4] == [0x100, 0, 0, 0] {
        return Reach::Forbidden("discard-only");
    }
    if s[..4] == [0x100, 0, 0, 1] {
        return Reach::Forbidden("the dummy IPv6 prefix");
    }
    if (s[0] == 0x2001 && s[1] == 0xdb8) || s[0] & 0xfff0 == 0x3ff0 {
        return Reach::Forbidden("documentation");
    }
    if s[0] == 0x5f00 {
        return Reach::Forbidden("segment routing (SRv6) SIDs");
    }
    if ip.is_loopback() {
        return Reach::Private("loopback");
    }
    if s[0] & 0xfe00 == 0xfc00 {
        return Reach::Private("unique local");
    }
    if s[0] & 0xffc0 == 0xfec0 {
        return Reach::Private("site-local");
    }
    if s[0] == 0x2001 && s[1] < 0x200 {
        return Reach::Private("IETF protocol assignments (Teredo among them)");
    }
    Reach::Public
}

/// The address a URL's host names literally (`http://10.0.0.1/`, `http://[::1]/`, and the forms
/// the URL standard reads as IPv4, such as `http://0x7f.1/`); `None` for a domain name.
pub fn literal_host(url: &reqwest::Url) -> Option<IpAddr> {
    // The parser writes an IP host in its canonical form (IPv6 in brackets); a domain name
    // never reads as an address, since the parser would have taken it as one.
    let host = url.host_str()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.parse().ok()
}

/// Why a tool (or a document fetch) may not connect to `ip`, or `None` when it may.
pub fn refusal(ip: IpAddr, public_only: bool) -> Option<String> {
    match classify(ip) {
        Reach::Forbidden(why) => Some(format!("{ip} is {why}")),
        Reach::Private(why) if public_only => Some(format!(
            "{ip} is {why}, and tools may reach public addresses only"
        )),
        Reach::Private(_) | Reach::Public => None,
    }
}

/// The HTTP client's resolver for tools: resolves, then refuses the whole name if any of its
/// addresses is one tools may not reach.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub public_only: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let public_only = self.public_only;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(why) = addresses.iter().find_map(|a| refusal(a.ip(), public_only)) {
                return Err(format!("tool host {host}: {why}").into());
            }
            let addresses: reqwest::dns::Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

/// Why a URL may not be fetched, found before connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not `http` or `https`, or no host.
    Url(String),
    /// The host is, or resolves to, an address refused (`refusal`'s reason).
    Address(String),
    /// The host's name could not be looked up (perhaps for now).
    Lookup(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Url(m) | Refusal::Address(m) | Refusal::Lookup(m) => f.write_str(m),
        }
    }
}

/// Checks a URL before it is fetched: its scheme, its literal address (which the client's
/// resolver never sees), and every address its name resolves to now. The client's resolver
/// ([`GuardedResolver`]) checks again the addresses it connects to.
pub async fn check_url(url: &reqwest::Url, public_only: bool) -> Result<(), Refusal> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refusal::Url(format!(
            "only http and https URLs, not {}",
            url.scheme()
        )));
    }
    let host = url
        .host_str()
        .ok_or_else(|| Refusal::Url("the URL has no host".into()))?;
    if let Some(ip) = literal_host(url) {
        return match refusal(ip, public_only) {
            Some(why) => Err(Refusal::Address(format!("host {host}: {why}"))),
            None => Ok(()),
        };
    }
    let port = url.port_or_known_default().unwrap_or(80);
    let addresses = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| Refusal::Lookup(format!("cannot resolve {host}: {e}")))?;
    for address in addresses {
        if let Some(why) = refusal(address.ip(), public_only) {
            return Err(Refusal::Address(format!("host {host}: {why}")));
        }
    }
    Ok(())
}

/// Most redirects a document fetch follows.
pub const MAX_REDIRECTS: usize = 5;

/// An HTTP client for fetching documents from URLs: names are checked by [`GuardedResolver`]
/// as they are connected to, and each redirect's target is checked for its scheme and literal
/// address before it is followed (at most [`MAX_REDIRECTS`]).
pub fn fetch_client(public_only: bool) -> reqwest::Result<reqwest::Client> {
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        // `previous` holds the first URL and every redirect followed so far.
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        let url = attempt.url();
        if !matches!(url.scheme(), "http" | "https") {
            let scheme = url.scheme().to_owned();
            return attempt.error(format!("a redirect to a {scheme} URL"));
        }
        match literal_host(url).and_then(|ip| refusal(ip, public_only)) {
            Some(why) => attempt.error(format!("a redirect to {why}")),
            None => attempt.follow(),
        }
    });
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        // Through a proxy the resolver would see only the proxy's name.
        .no_proxy()
        .redirect(policy)
        .dns_resolver(GuardedResolver { public_only })
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reach(text: &str) -> Reach {
        classify(text.parse().unwrap())
    }

    #[test]
    fn every_form_of_a_private_or_metadata_address_is_caught() {
        for forbidden in [
            "169.254.169.254",
            "::ffff:169.254.0.1",
            "::ffff:0.0.0.0",
            "0.0.0.0",
            "0.1.2.3",
            "100.100.100.200",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "2001:db8::1",
            "100::1",
            "::",
        ] {
            assert!(
                matches!(reach(forbidden), Reach::Forbidden(_)),
                "{forbidden}: {:?}",
                reach(forbidden)
            );
        }
        for private in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "::ffff:10.255.255.1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::a00:1",
            "2002:7f00:1::1",
            "::127.0.0.1",
            "::1",
            "10.0.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "198.19.0.1",
            "fd12:3456::1",
            "fec0::1",
            "2001::1",
        ] {
            assert!(
                matches!(reach(private), Reach::Private(_)),
                "{private}: {:?}",
                reach(private)
            );
            assert!(refusal(private.parse().unwrap(), true).is_some());
            assert!(refusal(private.parse().unwrap(), false).is_none());
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:808:808::1",
            "100.128.0.1",
        ] {
            assert_eq!(reach(public), Reach::Public, "{public}");
            assert!(refusal(public.parse().unwrap(), true).is_none());
        }
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_that_resolves_to_a_refused_address() {
        use reqwest::dns::Resolve;
        let guarded = GuardedResolver { public_only: true };
        let refused = guarded.resolve("localhost".parse().unwrap()).await;
        assert!(refused.is_err());
        let open = GuardedResolver { public_only: false };
        let resolved: Vec<SocketAddr> = open
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(resolved.iter().all(|a| a.ip().is_loopback()));
    }
}

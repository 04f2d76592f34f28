//! Fuzz target `tool-url`: the tool-URL check ([`crate::egress`]), against an oracle written
//! apart from it, the IANA special-purpose address registries (IPv4 and IPv6 blocks that are
//! not globally reachable), with every IPv6 form that carries an IPv4 address.
//!
//! - URLs: seeds of tricky URLs, edited. When the URL parser reads a literal address, that is
//!   the address [`crate::egress::literal_host`] gives (what the check judges is what is
//!   connected to), and an address inside a special-purpose block is never public.
//! - Addresses: a block, an address inside it and one of its written forms; never public.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use switchyard_events::fuzzing::{Mutated, Target};

use crate::egress::{Reach, classify, literal_host, refusal};

/// IANA IPv4 special-purpose blocks that are not globally reachable, with multicast and the
/// link-local metadata range (prefix, length).
const V4_BLOCKS: &[([u8; 4], u32)] = &[
    ([0, 0, 0, 0], 8),
    ([10, 0, 0, 0], 8),
    ([100, 64, 0, 0], 10),
    ([127, 0, 0, 0], 8),
    ([169, 254, 0, 0], 16),
    ([172, 16, 0, 0], 12),
    ([192, 0, 0, 0], 29),
    ([192, 0, 0, 8], 32),
    ([192, 0, 0, 170], 31),
    ([192, 0, 2, 0], 24),
    ([192, 168, 0, 0], 16),
    ([198, 18, 0, 0], 15),
    ([198, 51, 100, 0], 24),
    ([203, 0, 113, 0], 24),
    ([224, 0, 0, 0], 4),
    ([240, 0, 0, 0], 4),
    ([255, 255, 255, 255], 32),
];

/// IANA IPv6 special-purpose blocks that are not globally reachable (those that embed an
/// IPv4 address are covered through [`V4_BLOCKS`]), with multicast and site-local.
const V6_BLOCKS: &[(u128, u32)] = &[
    (0, 128),                                         // unspecified
    (1, 128),                                         // loopback
    (0x0100_0000_0000_0000 << 64, 64),                // discard-only
    ((0x0100_0000_0000_0001 << 64), 64),              // dummy prefix
    (0x0064_ff9b_0001 << 80, 48),                     // local-use NAT64
    (0x2001_0000 << 96, 23),                          // IETF protocol assignments
    (0x2001_0002_0000 << 80, 48),                     // benchmarking
    (0x2001_0db8 << 96, 32),                          // documentation
    (0x3fff << 112, 20),                              // documentation
    (0x5f00 << 112, 16),                              // SRv6 SIDs
    (0xfc00 << 112, 7),                               // unique local
    (0xfe80 << 112, 10),                              // link-local
    (0xfec0 << 112, 10),                              // site-local (deprecated)
    (0xff00 << 112, 8),                               // multicast
    (0xfd00_0ec2_0000_0000_0000_0000_0000_0254, 128), // a cloud metadata address
];

fn in_v4_block(ip: Ipv4Addr) -> bool {
    V4_BLOCKS.iter().any(|&(net, bits)| {
        let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
        u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
    })
}

fn in_v6_block(ip: Ipv6Addr) -> bool {
    V6_BLOCKS.iter().any(|&(net, bits)| {
        let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
        u128::from(ip) & mask == net & mask
    })
}

/// Every IPv6 form that carries `v4`: mapped, compatible, the two NAT64 prefixes, 6to4.
fn v6_forms(v4: Ipv4Addr) -> [Ipv6Addr; 5] {
    let bits = u128::from(u32::from(v4));
    [
        v4.to_ipv6_mapped(),
        v4.to_ipv6_compatible(),
        Ipv6Addr::from((0x0064_ff9b_u128 << 96) | bits),
        Ipv6Addr::from((0x0064_ff9b_0001_u128 << 80) | bits),
        Ipv6Addr::from((0x2002_u128 << 112) | (bits << 80)),
    ]
}

/// An address inside a special-purpose block must not be public, in any of its forms.
fn assert_not_public(ip: IpAddr) {
    let reach = classify(ip);
    let special = match ip {
        IpAddr::V4(v4) => in_v4_block(v4),
        IpAddr::V6(v6) => in_v6_block(v6) || v6_forms_of(v6).is_some_and(in_v4_block),
    };
    if special {
        assert_ne!(
            reach,
            Reach::Public,
            "{ip} is special-purpose but judged public"
        );
        assert!(
            refusal(ip, true).is_some(),
            "{ip} passes with public-only tools"
        );
    }
    // The two modes agree with the classification.
    assert_eq!(
        refusal(ip, false).is_some(),
        matches!(reach, Reach::Forbidden(_)),
        "{ip}"
    );
    assert_eq!(refusal(ip, true).is_some(), reach != Reach::Public, "{ip}");
}

/// The IPv4 address an IPv6 form carries, by the oracle's own reading of the forms.
fn v6_forms_of(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(v6);
    let low = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    let candidates = [
        (bits >> 32 == 0xffff, low),
        (bits >> 32 == 0, low),
        (bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000, low),
        (bits >> 80 == 0x0064_ff9b_0001, low),
        (
            bits >> 112 == 0x2002,
            Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32),
        ),
    ];
    candidates.into_iter().find(|(is, _)| *is).map(|(_, v4)| v4)
}

fn url_property(_: &str, bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let Ok(url) = reqwest::Url::parse(text) else {
        return;
    };
    if let Some(ip) = literal_host(&url) {
        // What the HTTP client connects to for this URL is the host the parser read.
        let host = url.host_str().expect("a literal host");
        assert_eq!(
            host.trim_matches(['[', ']']).parse::<IpAddr>().ok(),
            Some(ip),
            "{text}"
        );
        assert_not_public(ip);
    }
}

#[test]
fn tool_url() {
    let target = Target::new("tool-url");
    // The seeds that name a special-purpose address are refused in public-only mode.
    for (name, bytes) in target.seeds() {
        let text = std::str::from_utf8(bytes).expect("UTF-8 seed");
        let parsed = reqwest::Url::parse(text);
        if name.starts_with("bad-") {
            assert!(parsed.is_err(), "seed {name} parses");
        }
        if let Some(ip) = parsed.ok().as_ref().and_then(literal_host) {
            assert!(refusal(ip, true).is_some(), "seed {name}: {ip} passes");
        }
        url_property(name, bytes);
    }
    let dictionary = [
        "[",
        "]",
        "::ffff:",
        "64:ff9b::",
        "64:ff9b:1::",
        "2002:",
        "::",
        "0x",
        "0",
        ".",
        ":",
        "%25",
        "@",
        "127.0.0.1",
        "7f00:1",
        "169.254.169.254",
        "10.0.0.1",
        "fe80::",
        "fd00:ec2::",
        "/",
        "\\",
        "#",
        "?",
        "http://",
        "https://",
        "localhost",
        "%2e",
    ];
    bolero::check!()
        .with_type::<Mutated>()
        .for_each(|input| target.run(&dictionary, input, url_property));
}

#[test]
fn special_purpose_addresses() {
    let report = Target::new("tool-url");
    bolero::check!()
        .with_type::<(u8, u128, u8)>()
        .cloned()
        .for_each(|(block, bits, form)| {
            report.tally();
            let blocks = V4_BLOCKS.len() + V6_BLOCKS.len();
            let block = usize::from(block) % blocks;
            if let Some(&(net, len)) = V4_BLOCKS.get(block) {
                let host = (bits as u32) & u32::MAX.checked_shr(len).unwrap_or(0);
                let v4 = Ipv4Addr::from(u32::from(Ipv4Addr::from(net)) | host);
                assert_not_public(IpAddr::V4(v4));
                let forms = v6_forms(v4);
                let v6 = forms[usize::from(form) % forms.len()];
                assert_not_public(IpAddr::V6(v6));
            } else {
                let (net, len) = V6_BLOCKS[block - V4_BLOCKS.len()];
                let host = bits & u128::MAX.checked_shr(len).unwrap_or(0);
                assert_not_public(IpAddr::V6(Ipv6Addr::from(net | host)));
            }
        });
}

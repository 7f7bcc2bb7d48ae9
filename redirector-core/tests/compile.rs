//! `redirector_core::compile`: alias tables, the kernel's route-table encoding, keys
//! and diffs, checked against the layout in `redirector-common`.

use proptest::prelude::*;
use redirector_core::{
    compile::{
        self, AliasTable, CompileError, Diff, Table, Tables, compile_route, ip_words, service_key,
        words_ip,
    },
    resolve::{Class, Resolution, ResolvedBackend, ResolvedRoute, Workload},
};
use redirector_common::{
    BackendSlot, Endpoint, MAX_ROUTES, MAX_TABLE_ENTRIES, TABLE_CHUNK, TableChunk, TableEntry, TableHeader, is_mapped_v4, mapped_v4,
    reject_bound,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn backend(weight: u32, endpoints: &[&str]) -> ResolvedBackend {
    ResolvedBackend {
        name: format!("MeshService/b{weight}").into(),
        weight,
        endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(),
    }
}

fn route(vip: &str, port: u16, backends: Vec<ResolvedBackend>) -> ResolvedRoute {
    ResolvedRoute {
        mesh: "default".into(),
        service: "MeshService/s".into(),
        vip: ip(vip),
        port,
        app_protocol: None,
        policy: None,
        backends,
        why: vec![],
    }
}

fn endpoint(addr: &str) -> Endpoint {
    let addr: SocketAddr = addr.parse().unwrap();
    Endpoint {
        addr: ip_words(addr.ip()),
        port: addr.port().to_be(),
        pad: 0,
        reserved: 0,
    }
}

/// The bytes of four words as they sit in memory (what the kernel compares).
fn word_bytes(words: [u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, w) in words.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
    }
    out
}

/// Enumerates every (slot, u) pair of the kernel's two uniform draws on the
/// table as the kernel reads it, and counts how often each backend is chosen.
fn kernel_choice_counts(table: &Table) -> Vec<u64> {
    let entries = table.entries();
    // SAFETY: entry 0 is the header and entries 1..=n are backend slots.
    let header = unsafe { entries[0].header };
    let n = header.backend_count as usize;
    let mut counts = vec![0u64; n];
    for slot in 0..n {
        let b = unsafe { entries[1 + slot].backend };
        for u in 0..header.total_weight {
            let chosen = if u < b.threshold {
                slot
            } else {
                b.alias as usize
            };
            counts[chosen] += 1;
        }
    }
    counts
}

// ---------------------------------------------------------------- alias table

proptest! {
    #[test]
    fn alias_table_reproduces_weights_exactly(
        weights in prop::collection::vec(0u32..1_000_000, 1..64)
            .prop_filter("at least one non-zero weight", |w| w.iter().any(|&x| x > 0))
    ) {
        let table = AliasTable::new(&weights).unwrap();
        let n = weights.len() as u64;
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        prop_assert_eq!(u64::from(table.total), total);
        prop_assert_eq!(table.thresholds.len(), weights.len());
        prop_assert_eq!(table.aliases.len(), weights.len());
        let shares = table.exact_shares();
        for i in 0..weights.len() {
            prop_assert_eq!(shares[i], u64::from(weights[i]) * n, "index {}", i);
            prop_assert!(table.thresholds[i] <= table.total);
            prop_assert!(u64::from(table.aliases[i]) < n);
        }
    }

    #[test]
    fn alias_table_reproduces_large_weights_exactly(
        weights in prop::collection::vec(0u32..=u32::MAX / 64, 1..64)
            .prop_filter("at least one non-zero weight", |w| w.iter().any(|&x| x > 0))
    ) {
        let table = AliasTable::new(&weights).unwrap();
        let n = weights.len() as u64;
        let expected: Vec<u64> = weights.iter().map(|&w| u64::from(w) * n).collect();
        prop_assert_eq!(table.exact_shares(), expected);
    }

    #[test]
    fn kernel_draw_over_every_slot_and_number_recovers_weights(
        weights in prop::collection::vec(0u32..40, 1..9)
            .prop_filter("at least one non-zero weight", |w| w.iter().any(|&x| x > 0))
    ) {
        let backends = weights.iter().map(|&w| backend(w, &["10.0.0.1:80"])).collect();
        let table = compile_route(&route("10.9.0.1", 80, backends)).unwrap();
        let n = weights.len() as u64;
        let expected: Vec<u64> = weights.iter().map(|&w| u64::from(w) * n).collect();
        prop_assert_eq!(kernel_choice_counts(&table), expected);
    }
}

#[test]
fn kernel_draw_recovers_a_skewed_split() {
    let weights = [90, 10, 0, 1, 7];
    let backends = weights
        .iter()
        .map(|&w| backend(w, &["10.0.0.1:80"]))
        .collect();
    let table = compile_route(&route("10.9.0.1", 80, backends)).unwrap();
    let counts = kernel_choice_counts(&table);
    let draws: u64 = counts.iter().sum();
    assert_eq!(draws, 5 * 108);
    let shares: Vec<f64> = counts.iter().map(|&c| c as f64 / draws as f64).collect();
    let expected: Vec<f64> = weights.iter().map(|&w| f64::from(w) / 108.0).collect();
    assert_eq!(shares, expected);
}

#[test]
fn alias_table_needs_a_positive_total_that_fits_32_bits() {
    assert_eq!(AliasTable::new(&[]), None);
    assert_eq!(AliasTable::new(&[0]), None);
    assert_eq!(AliasTable::new(&[0, 0, 0]), None);
    assert_eq!(AliasTable::new(&[u32::MAX, 1]), None);
    let max = AliasTable::new(&[u32::MAX - 1, 1]).unwrap();
    assert_eq!(max.total, u32::MAX);
    assert_eq!(max.exact_shares(), vec![2 * u64::from(u32::MAX - 1), 2]);
}

#[test]
fn alias_table_of_equal_weights_keeps_every_slot() {
    let table = AliasTable::new(&[5, 5, 5]).unwrap();
    assert_eq!(
        table,
        AliasTable {
            thresholds: vec![15, 15, 15],
            aliases: vec![0, 1, 2],
            total: 15
        }
    );
}

#[test]
fn alias_table_of_one_backend_always_keeps_it() {
    let table = AliasTable::new(&[7]).unwrap();
    assert_eq!(
        table,
        AliasTable {
            thresholds: vec![7],
            aliases: vec![0],
            total: 7
        }
    );
}

#[test]
fn zero_weight_slot_always_goes_to_its_alias() {
    let table = AliasTable::new(&[0, 3]).unwrap();
    assert_eq!(table.thresholds[0], 0);
    assert_eq!(table.aliases[0], 1);
    assert_eq!(table.exact_shares(), vec![0, 6]);
}

proptest! {
    #[test]
    fn reject_bound_is_two_to_the_32_mod_range(range in 1u32..) {
        prop_assert_eq!(u64::from(reject_bound(range)), (1u64 << 32) % u64::from(range));
    }
}

#[test]
fn reject_bound_edge_values() {
    assert_eq!(reject_bound(0), 0);
    assert_eq!(reject_bound(1), 0);
    assert_eq!(reject_bound(2), 0);
    assert_eq!(reject_bound(3), 1);
    assert_eq!(reject_bound(u32::MAX), 1);
    assert_eq!(reject_bound(1 << 31), 0);
}

// ---------------------------------------------------------------- tables

#[test]
fn table_lays_out_header_backends_and_endpoints() {
    let r = route(
        "10.9.0.1",
        80,
        vec![
            backend(2, &["10.0.0.1:80", "10.0.0.2:8080"]),
            backend(1, &[]),
            backend(3, &["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"]),
        ],
    );
    let table = compile_route(&r).unwrap();
    assert_eq!(
        table.header,
        TableHeader {
            backend_count: 3,
            backend_reject: reject_bound(3),
            total_weight: 6,
            weight_reject: reject_bound(6),
            counters: 0,
            flags: 0
        }
    );
    let alias = AliasTable::new(&[2, 1, 3]).unwrap();
    let slot = |i: usize, first: u32, count: u32| BackendSlot {
        threshold: alias.thresholds[i],
        alias: alias.aliases[i],
        first_endpoint: first,
        endpoint_count: count,
        endpoint_reject: reject_bound(count),
        counter: 0,
    };
    assert_eq!(
        table.backends,
        vec![slot(0, 4, 2), slot(1, 6, 0), slot(2, 6, 3)]
    );
    assert_eq!(
        table.endpoints,
        [
            "10.0.0.1:80",
            "10.0.0.2:8080",
            "10.0.1.1:80",
            "10.0.1.2:80",
            "10.0.1.3:80"
        ]
        .map(endpoint)
        .to_vec()
    );
}

#[test]
fn ipv4_vip_table_drops_ipv6_endpoints() {
    let r = route(
        "10.9.0.1",
        80,
        vec![
            backend(1, &["[fd00::1]:80", "10.0.0.1:80"]),
            backend(1, &["[fd00::2]:80"]),
        ],
    );
    let table = compile_route(&r).unwrap();
    assert_eq!(table.endpoints, vec![endpoint("10.0.0.1:80")]);
    assert_eq!(
        (
            table.backends[0].first_endpoint,
            table.backends[0].endpoint_count
        ),
        (3, 1)
    );
    assert_eq!(
        (
            table.backends[1].first_endpoint,
            table.backends[1].endpoint_count
        ),
        (4, 0)
    );
    assert_eq!(table.header.backend_count, 2);
}

#[test]
fn ipv6_vip_table_keeps_ipv4_endpoints_as_mapped() {
    let r = route(
        "fd00::10",
        443,
        vec![backend(1, &["10.0.0.1:8443", "[fd00::1]:8443"])],
    );
    let table = compile_route(&r).unwrap();
    assert_eq!(table.endpoints.len(), 2);
    let v4 = table.endpoints[0];
    assert!(is_mapped_v4(&v4.addr));
    assert_eq!(
        word_bytes(v4.addr),
        Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().octets()
    );
    assert_eq!(v4.port.to_ne_bytes(), 8443u16.to_be_bytes());
    assert_eq!(
        word_bytes(table.endpoints[1].addr),
        "fd00::1".parse::<Ipv6Addr>().unwrap().octets()
    );
    assert_eq!(table.backends[0].endpoint_count, 2);
}

#[test]
fn ipv4_mapped_vip_table_is_the_ipv4_table() {
    let backends = vec![backend(1, &["[fd00::1]:80", "10.0.0.1:80"])];
    assert_eq!(
        compile_route(&route("::ffff:10.9.0.1", 80, backends.clone())).unwrap(),
        compile_route(&route("10.9.0.1", 80, backends)).unwrap()
    );
}

#[test]
fn zero_total_weight_or_no_backend_gives_an_empty_table() {
    for backends in [
        vec![],
        vec![backend(0, &["10.0.0.1:80"]), backend(0, &["10.0.0.2:80"])],
    ] {
        let table = compile_route(&route("10.9.0.1", 80, backends)).unwrap();
        assert_eq!(
            table,
            Table {
                header: TableHeader {
                    backend_count: 0,
                    backend_reject: 0,
                    total_weight: 0,
                    weight_reject: 0,
                    counters: 0,
                    flags: 0
                },
                backends: vec![],
                endpoints: vec![],
            }
        );
        assert_eq!(table.entries().len(), 1);
    }
}

#[test]
fn weights_above_32_bits_are_a_compile_error() {
    let r = route(
        "10.9.0.1",
        80,
        vec![backend(u32::MAX, &[]), backend(1, &[])],
    );
    assert_eq!(
        compile_route(&r),
        Err(CompileError::WeightOverflow {
            service: "MeshService/s".into(),
            addr: "10.9.0.1:80".parse().unwrap()
        })
    );
    assert_eq!(
        compile_route(&r).unwrap_err().to_string(),
        format!(
            "MeshService/s at 10.9.0.1:80: sum of weights exceeds {}",
            u32::MAX
        )
    );
}

#[test]
fn table_larger_than_the_limit_is_a_compile_error() {
    let with_endpoints = |count: u32| ResolvedBackend {
        name: "b".into(),
        weight: 1,
        endpoints: (0..count)
            .map(|i| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), 80))
            .collect(),
    };
    let exact = compile_route(&route(
        "10.9.0.1",
        80,
        vec![with_endpoints(MAX_TABLE_ENTRIES - 2)],
    ))
    .unwrap();
    assert_eq!(exact.entries().len(), MAX_TABLE_ENTRIES as usize);
    let r = route(
        "10.9.0.1",
        80,
        vec![
            with_endpoints(MAX_TABLE_ENTRIES - 2),
            backend(1, &["10.0.0.1:80"]),
        ],
    );
    assert_eq!(
        compile_route(&r),
        Err(CompileError::TableTooLarge {
            service: "MeshService/s".into(),
            addr: "10.9.0.1:80".parse().unwrap(),
            entries: MAX_TABLE_ENTRIES as usize + 2,
        })
    );
}

#[test]
fn more_routes_than_the_limit_is_a_compile_error() {
    let routes: Vec<ResolvedRoute> = (0..=MAX_ROUTES)
        .map(|i| ResolvedRoute {
            vip: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
            ..route("10.0.0.0", 80, vec![])
        })
        .collect();
    assert_eq!(
        compile::compile_routes(&routes),
        Err(CompileError::TooManyRoutes {
            count: MAX_ROUTES as usize + 1
        })
    );
    assert_eq!(
        compile::compile_routes(&routes[1..]).unwrap().len(),
        MAX_ROUTES as usize
    );
}

#[test]
fn entries_are_header_then_backends_then_endpoints() {
    let r = route(
        "fd00::10",
        80,
        vec![
            backend(1, &["10.0.0.1:80"]),
            backend(4, &["[fd00::1]:81", "[fd00::2]:82"]),
        ],
    );
    let table = compile_route(&r).unwrap();
    let entries = table.entries();
    assert_eq!(entries.len(), 1 + 2 + 3);
    // SAFETY: the views read are the ones the layout puts at each index.
    unsafe {
        assert_eq!(entries[0].header, table.header);
        assert_eq!(
            [entries[1].backend, entries[2].backend],
            [table.backends[0], table.backends[1]]
        );
        let endpoints: Vec<Endpoint> = entries[3..].iter().map(|e| e.endpoint).collect();
        assert_eq!(endpoints, table.endpoints);
        for b in [entries[1].backend, entries[2].backend] {
            for i in b.first_endpoint..b.first_endpoint + b.endpoint_count {
                assert!((i as usize) < entries.len());
            }
        }
    }
}

proptest! {
    #[test]
    fn table_layout_holds_for_any_route(
        v6_vip in any::<bool>(),
        backends in prop::collection::vec(
            (0u32..1000, prop::collection::vec((any::<bool>(), any::<u32>(), 1u16..), 0..6)),
            0..10,
        )
    ) {
        let vip = if v6_vip { "fd00::10" } else { "10.9.0.1" };
        let backends: Vec<ResolvedBackend> = backends
            .into_iter()
            .map(|(weight, eps)| ResolvedBackend {
                name: "b".into(),
                weight,
                endpoints: eps
                    .into_iter()
                    .map(|(v6, a, port)| {
                        let addr = if v6 { IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, (a >> 16) as u16, a as u16)) } else { IpAddr::V4(Ipv4Addr::from(a)) };
                        SocketAddr::new(addr, port)
                    })
                    .collect(),
            })
            .collect();
        let r = route(vip, 80, backends.clone());
        let table = compile_route(&r).unwrap();
        let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
        let Some(alias) = AliasTable::new(&weights) else {
            prop_assert_eq!(table.header.backend_count, 0);
            prop_assert!(table.backends.is_empty() && table.endpoints.is_empty());
            return Ok(());
        };
        let n = backends.len();
        prop_assert_eq!(table.header.backend_count as usize, n);
        prop_assert_eq!(table.header.backend_reject, reject_bound(n as u32));
        prop_assert_eq!(table.header.total_weight, alias.total);
        prop_assert_eq!(table.header.weight_reject, reject_bound(alias.total));
        prop_assert_eq!(table.header.flags, 0);
        prop_assert_eq!(table.entries().len(), 1 + n + table.endpoints.len());
        let mut next = (1 + n) as u32;
        for (i, (slot, b)) in table.backends.iter().zip(&backends).enumerate() {
            let reachable: Vec<Endpoint> = b
                .endpoints
                .iter()
                .filter(|e| v6_vip || e.is_ipv4())
                .map(|e| Endpoint { addr: ip_words(e.ip()), port: e.port().to_be(), pad: 0, reserved: 0 })
                .collect();
            prop_assert_eq!(slot.threshold, alias.thresholds[i]);
            prop_assert_eq!(slot.alias, alias.aliases[i]);
            prop_assert_eq!(slot.first_endpoint, next);
            prop_assert_eq!(slot.endpoint_count as usize, reachable.len());
            prop_assert_eq!(slot.endpoint_reject, reject_bound(slot.endpoint_count));
            let start = slot.first_endpoint as usize - 1 - n;
            prop_assert_eq!(&table.endpoints[start..start + reachable.len()], &reachable[..]);
            next += slot.endpoint_count;
        }
        prop_assert_eq!(next as usize, 1 + n + table.endpoints.len());
    }
}

// ---------------------------------------------------------------- decoding (what `status` reads back)

/// A route over `weights` whose backend `i` has `i % 3` IPv4 and one IPv6 endpoint.
fn any_route(v6_vip: bool, weights: &[u32]) -> ResolvedRoute {
    let backends = weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| ResolvedBackend {
            name: format!("b{i}").into(),
            weight,
            endpoints: (0..i % 3)
                .map(|k| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, i as u8, k as u8, 1)), 8000 + k as u16))
                .chain(std::iter::once(SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, i as u16, 1)), 9000)))
                .collect(),
        })
        .collect();
    route(if v6_vip { "fd00::10" } else { "10.9.0.1" }, 80, backends)
}

proptest! {
    #[test]
    fn decoding_the_kernel_entries_gives_back_the_table(v6_vip in any::<bool>(), weights in prop::collection::vec(0u32..100_000, 0..12)) {
        let r = any_route(v6_vip, &weights);
        let table = compile_route(&r).unwrap();
        let entries = table.entries();
        let decoded = Table::decode(&entries).unwrap();
        prop_assert_eq!(&decoded, &table);
        prop_assert_eq!(compile::table_len(|i| entries.get(i as usize).copied()) as usize, entries.len());
        // The kernel's chunks: the entries in order, then zeros to the chunk's end.
        // SAFETY: every view of an entry is plain integers of the same size.
        let bits = |e: &TableEntry| unsafe { e.endpoint };
        let chunked: Vec<Endpoint> = table.chunks().flat_map(|c| c.entries).map(|e| bits(&e)).collect();
        prop_assert_eq!(chunked.len(), table.chunk_count() as usize * TABLE_CHUNK as usize);
        prop_assert_eq!(table.chunk_count(), (entries.len() as u32).div_ceil(TABLE_CHUNK));
        prop_assert_eq!(&chunked[..entries.len()], &entries.iter().map(bits).collect::<Vec<_>>()[..]);
        prop_assert!(chunked[entries.len()..].iter().all(|e| *e == bits(&TableChunk::ZERO.entries[0])));
        if table.backends.is_empty() {
            return Ok(());
        }
        let n = weights.len() as u64;
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let shares = decoded.shares();
        for (i, (share, b)) in shares.iter().zip(&r.backends).enumerate() {
            // Exact: weight / total == (weight * n) / (n * total).
            prop_assert_eq!(*share, (u64::from(b.weight) * n, n * total), "backend {}", i);
            let reachable: Vec<SocketAddr> = b.endpoints.iter().copied().filter(|e| v6_vip || e.is_ipv4()).collect();
            prop_assert_eq!(decoded.backend_endpoints(i), reachable);
        }
    }
}

#[test]
fn decoding_rejects_what_this_build_never_writes() {
    use compile::DecodeError;
    let table = compile_route(&any_route(false, &[3, 1, 2])).unwrap();
    let entries = table.entries();
    assert_eq!(Table::decode(&[]), Err(DecodeError::Empty));
    assert_eq!(Table::decode(&entries[..3]), Err(DecodeError::Truncated { needed: 4, got: 3 }));
    // The last backend's endpoints cut off.
    let short = &entries[..entries.len() - 1];
    assert!(matches!(Table::decode(short), Err(DecodeError::EndpointsOutside { backend: 2, .. })));
    // A slot whose alias points past the backends.
    let mut bad = table.clone();
    bad.backends[1].alias = 3;
    assert_eq!(Table::decode(&bad.entries()), Err(DecodeError::BadSlot { backend: 1 }));
    // A slot whose endpoints start inside the backend slots.
    let mut bad = table.clone();
    bad.backends[1].first_endpoint = 2;
    assert!(matches!(Table::decode(&bad.entries()), Err(DecodeError::EndpointsOutside { backend: 1, .. })));
}

// ---------------------------------------------------------------- keys and addresses

#[test]
fn service_key_of_ipv4_is_mapped_in_network_order() {
    let key = service_key(0, ip("10.1.2.3"), 8080);
    assert_eq!(
        word_bytes(key.addr),
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3]
    );
    assert_eq!(key.port.to_ne_bytes(), [0x1f, 0x90]);
    assert_eq!(key.pad, 0);
    assert_eq!(key.addr, mapped_v4(u32::from_ne_bytes([10, 1, 2, 3])));
}

#[test]
fn service_key_of_ipv6_is_its_octets() {
    let v6: Ipv6Addr = "2001:db8::1:2".parse().unwrap();
    let key = service_key(0, IpAddr::V6(v6), 443);
    assert_eq!(word_bytes(key.addr), v6.octets());
    assert_eq!(key.port.to_ne_bytes(), [0x01, 0xbb]);
    assert!(!is_mapped_v4(&key.addr));
}

#[test]
fn ipv4_and_its_mapped_form_share_a_key() {
    assert_eq!(
        service_key(0, ip("192.0.2.7"), 80),
        service_key(0, ip("::ffff:192.0.2.7"), 80)
    );
    assert_ne!(
        service_key(0, ip("192.0.2.7"), 80),
        service_key(0, ip("::192.0.2.7"), 80)
    );
    assert_ne!(
        service_key(0, ip("192.0.2.7"), 80),
        service_key(0, ip("192.0.2.7"), 81)
    );
}

#[test]
fn words_ip_returns_ipv4_for_mapped_words() {
    assert_eq!(words_ip(ip_words(ip("::ffff:10.0.0.1"))), ip("10.0.0.1"));
    assert_eq!(words_ip(ip_words(ip("::"))), ip("::"));
    assert_eq!(words_ip([0; 4]), ip("::"));
}

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        any::<u32>().prop_map(|a| IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped())),
    ]
}

proptest! {
    #[test]
    fn ip_words_roundtrip(addr in any_ip()) {
        prop_assert_eq!(words_ip(ip_words(addr)), addr.to_canonical());
        let expected = match addr {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        prop_assert_eq!(word_bytes(ip_words(addr)), expected);
    }

    #[test]
    fn words_roundtrip(words in any::<[u32; 4]>()) {
        prop_assert_eq!(ip_words(words_ip(words)), words);
    }

    #[test]
    fn service_key_port_is_network_order(addr in any_ip(), port in any::<u16>()) {
        let key = service_key(0, addr, port);
        prop_assert_eq!(key.port.to_ne_bytes(), port.to_be_bytes());
        prop_assert_eq!(key.addr, ip_words(addr));
        prop_assert_eq!(key.pad, 0);
    }
}

// ---------------------------------------------------------------- compile and diff

#[test]
fn compile_keys_every_table_by_its_destination() {
    let routes = vec![
        route("10.9.0.1", 80, vec![backend(1, &["10.0.0.1:80"])]),
        route("10.9.0.1", 443, vec![backend(1, &["10.0.0.1:443"])]),
        route("fd00::1", 80, vec![backend(2, &["[fd00::2]:80"])]),
    ];
    let tables = compile::compile_routes(&routes).unwrap();
    assert_eq!(tables.len(), 3);
    for r in &routes {
        assert_eq!(
            tables[&service_key(0, r.vip, r.port)],
            compile_route(r).unwrap()
        );
    }
    assert!(compile::compile_routes(&[]).unwrap().is_empty());
}

#[test]
fn compile_fails_when_any_route_fails() {
    let routes = vec![
        route("10.9.0.1", 80, vec![backend(1, &["10.0.0.1:80"])]),
        route(
            "10.9.0.2",
            80,
            vec![backend(u32::MAX, &[]), backend(u32::MAX, &[])],
        ),
    ];
    assert!(matches!(
        compile::compile_routes(&routes),
        Err(CompileError::WeightOverflow { .. })
    ));
}

fn tables(routes: &[ResolvedRoute]) -> Tables {
    compile::compile_routes(routes).unwrap()
}

#[test]
fn diff_sorts_destinations_into_unchanged_upsert_and_remove() {
    let keep = route("10.9.0.1", 80, vec![backend(1, &["10.0.0.1:80"])]);
    let change_old = route("10.9.0.2", 80, vec![backend(1, &["10.0.0.2:80"])]);
    let change_new = route("10.9.0.2", 80, vec![backend(1, &["10.0.0.3:80"])]);
    let reweigh = route("10.9.0.2", 80, vec![backend(2, &["10.0.0.2:80"])]);
    let gone = route("10.9.0.3", 80, vec![backend(1, &[])]);
    let added = route("10.9.0.4", 80, vec![backend(1, &[])]);

    let old = tables(&[keep.clone(), change_old.clone(), gone.clone()]);
    let new = tables(&[keep.clone(), change_new, added.clone()]);
    let diff = Diff::between(&old, &new);
    assert_eq!(diff.unchanged, 1);
    assert_eq!(
        diff.upsert,
        vec![
            service_key(0, ip("10.9.0.2"), 80),
            service_key(0, ip("10.9.0.4"), 80)
        ]
    );
    assert_eq!(diff.remove, vec![service_key(0, ip("10.9.0.3"), 80)]);
    assert!(!diff.is_empty());

    let diff = Diff::between(&old, &tables(&[keep.clone(), reweigh, gone.clone()]));
    assert_eq!(
        (diff.unchanged, diff.upsert.len(), diff.remove.len()),
        (2, 1, 0)
    );
}

#[test]
fn diff_of_identical_tables_is_empty() {
    let t = tables(&[
        route("10.9.0.1", 80, vec![backend(1, &["10.0.0.1:80"])]),
        route("fd00::1", 80, vec![]),
    ]);
    let diff = Diff::between(&t, &t.clone());
    assert!(diff.is_empty());
    assert_eq!(
        diff,
        Diff {
            upsert: vec![],
            remove: vec![],
            unchanged: 2
        }
    );
    assert!(Diff::between(&Tables::new(), &Tables::new()).is_empty());
}

#[test]
fn diff_from_nothing_upserts_everything_and_to_nothing_removes_everything() {
    let t = tables(&[route("10.9.0.1", 80, vec![]), route("10.9.0.1", 81, vec![])]);
    let keys: Vec<_> = t.keys().copied().collect();
    assert_eq!(
        Diff::between(&Tables::new(), &t),
        Diff {
            upsert: keys.clone(),
            remove: vec![],
            unchanged: 0
        }
    );
    assert_eq!(
        Diff::between(&t, &Tables::new()),
        Diff {
            upsert: vec![],
            remove: keys,
            unchanged: 0
        }
    );
}

#[test]
fn compile_error_messages_name_the_limit() {
    assert_eq!(
        CompileError::TooManyRoutes { count: 70_000 }.to_string(),
        format!("70000 service addresses and ports exceed the limit of {MAX_ROUTES}")
    );
    assert_eq!(
        CompileError::TableTooLarge {
            service: "MeshService/s".into(),
            addr: "[fd00::1]:80".parse().unwrap(),
            entries: 70_000
        }
        .to_string(),
        format!(
            "MeshService/s at [fd00::1]:80: 70000 table entries exceed the limit of {MAX_TABLE_ENTRIES}"
        )
    );
}

// ---------------------------------------------------------------- classes

fn resolution(classes: Vec<Vec<ResolvedRoute>>) -> Resolution {
    Resolution {
        classes: classes
            .into_iter()
            .enumerate()
            .map(|(id, routes)| Class {
                id: id as u32,
                routes,
            })
            .collect(),
        workloads: vec![Workload {
            dataplane: "Dataplane/w".into(),
            namespace: None,
            mesh: "default".into(),
            cgroup: "w".into(),
            class: 1,
        }],
    }
}

#[test]
fn compile_writes_every_base_route_and_only_the_differing_routes_of_other_classes() {
    let same = route("10.9.0.1", 80, vec![backend(1, &["10.0.0.1:80"])]);
    let base_other = route("10.9.0.2", 80, vec![backend(1, &["10.0.0.2:80"])]);
    let class_other = route(
        "10.9.0.2",
        80,
        vec![backend(3, &["10.0.0.3:80"]), backend(1, &["10.0.0.2:80"])],
    );
    let class_only = route("127.0.0.1", 10001, vec![backend(1, &["10.0.0.4:80"])]);
    let class2_other = route("10.9.0.2", 80, vec![]);
    let r = resolution(vec![
        vec![same.clone(), base_other.clone()],
        vec![same.clone(), class_other.clone(), class_only.clone()],
        vec![same.clone(), base_other.clone()],
        vec![class2_other.clone()],
    ]);
    let tables = compile::compile(&r).unwrap();
    let expected: Tables = [
        (service_key(0, same.vip, 80), compile_route(&same).unwrap()),
        (
            service_key(0, base_other.vip, 80),
            compile_route(&base_other).unwrap(),
        ),
        (
            service_key(1, class_other.vip, 80),
            compile_route(&class_other).unwrap(),
        ),
        (
            service_key(1, class_only.vip, 10001),
            compile_route(&class_only).unwrap(),
        ),
        (
            service_key(3, class2_other.vip, 80),
            compile_route(&class2_other).unwrap(),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(tables, expected);
    // Class 2 equals the base everywhere: it needs no table of its own.
    assert!(tables.keys().all(|k| k.class != 2));
}

#[test]
fn class_route_differing_only_by_explanation_needs_no_table() {
    let base = route("10.9.0.1", 80, vec![backend(1, &["10.0.0.1:80"])]);
    let explained = ResolvedRoute {
        policy: Some("MeshTCPRoute/r".into()),
        why: vec!["MeshTCPRoute/r to[0] wins".into()],
        ..base.clone()
    };
    let tables = compile::compile(&resolution(vec![vec![base.clone()], vec![explained]])).unwrap();
    assert_eq!(
        tables.keys().copied().collect::<Vec<_>>(),
        vec![service_key(0, base.vip, 80)]
    );
}

#[test]
fn compile_of_a_resolution_counts_every_table_against_the_limit() {
    let half = MAX_ROUTES / 2 + 1;
    let class = |weight: u32| -> Vec<ResolvedRoute> {
        (0..half)
            .map(|i| ResolvedRoute {
                vip: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
                ..route("10.0.0.0", 80, vec![backend(weight, &[])])
            })
            .collect()
    };
    assert_eq!(
        compile::compile(&resolution(vec![class(1), class(2)])),
        Err(CompileError::TooManyRoutes {
            count: 2 * half as usize
        })
    );
    assert_eq!(
        compile::compile(&resolution(vec![class(1), class(1)]))
            .unwrap()
            .len(),
        half as usize
    );
}

#[test]
fn compile_of_a_resolution_fails_when_any_class_route_fails() {
    let ok = route("10.9.0.1", 80, vec![backend(1, &["10.0.0.1:80"])]);
    let overflow = route(
        "10.9.0.1",
        80,
        vec![backend(u32::MAX, &[]), backend(u32::MAX, &[])],
    );
    assert!(matches!(
        compile::compile(&resolution(vec![vec![ok], vec![overflow]])),
        Err(CompileError::WeightOverflow { .. })
    ));
}

#[test]
fn same_destination_in_two_classes_has_two_keys() {
    assert_ne!(
        service_key(0, ip("10.9.0.1"), 80),
        service_key(1, ip("10.9.0.1"), 80)
    );
    assert_eq!(service_key(7, ip("10.9.0.1"), 80).class, 7);
}

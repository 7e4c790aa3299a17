//! The protocol byte by byte, as its specification describes it: handshake,
//! options and their error replies, every command, hostile requests, several
//! clients, and clients that leave in the middle of a request.

mod common;

use common::*;
use nbd::proto::{cflag, chunk, cmd, errno, info, opt, rep, state, tflag};
use std::io::Write;

const SIZE: u64 = 8 << 20;

#[test]
fn greeting_list_and_unknown_options() {
    let srv = serve_new(SIZE, &[], false);
    let mut c = srv.connect();
    let flags = c.hello(nbd::proto::FLAG_C_FIXED_NEWSTYLE);
    assert_eq!(
        flags,
        nbd::proto::FLAG_FIXED_NEWSTYLE | nbd::proto::FLAG_NO_ZEROES
    );

    c.send_option(opt::LIST, &[]);
    let r = c.opt_replies();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].kind, rep::SERVER);
    assert_eq!(&r[0].data[..8], &[0, 0, 0, 4, b'd', b'i', b's', b'k']);
    assert_eq!(r[1].kind, rep::ACK);
    c.send_option(opt::LIST, b"x");
    assert_eq!(c.opt_reply().kind, rep::ERR_INVALID);

    // Unknown, unsupported and malformed options get error replies, and the
    // session goes on.
    for (o, data, want) in [
        (99u32, &b""[..], rep::ERR_UNSUP),
        (opt::STARTTLS, b"", rep::ERR_UNSUP),
        (opt::EXTENDED_HEADERS, b"", rep::ERR_UNSUP),
        (opt::STRUCTURED_REPLY, b"x", rep::ERR_INVALID),
        (opt::INFO, b"\0\0", rep::ERR_INVALID),
        (opt::SET_META_CONTEXT, b"", rep::ERR_INVALID),
    ] {
        c.send_option(o, data);
        let r = c.opt_reply();
        assert_eq!((r.option, r.kind), (o, want), "option {o}");
    }
    c.send_option(opt::INFO, &info_data("nope", &[]));
    let r = c.opt_reply();
    assert_eq!(r.kind, rep::ERR_UNKNOWN);
    assert!(String::from_utf8_lossy(&r.data).contains("nope"));

    // Too large an option: its data is read and dropped.
    c.send_option(77, &vec![0u8; 1 << 20]);
    assert_eq!(c.opt_reply().kind, rep::ERR_TOO_BIG);

    // INFO with every information type.
    c.send_option(
        opt::INFO,
        &info_data(
            "disk",
            &[info::NAME, info::DESCRIPTION, info::BLOCK_SIZE, 999],
        ),
    );
    let r = c.opt_replies();
    let kinds: Vec<u16> = r
        .iter()
        .filter(|r| r.kind == rep::INFO)
        .map(|r| u16::from_be_bytes([r.data[0], r.data[1]]))
        .collect();
    assert_eq!(
        kinds,
        vec![
            info::EXPORT,
            info::NAME,
            info::DESCRIPTION,
            info::BLOCK_SIZE
        ]
    );
    assert_eq!(&r[1].data[2..], b"disk");
    assert_eq!(&r[2].data[2..], b"a test disk");
    assert_eq!(r.last().unwrap().kind, rep::ACK);

    // Metadata contexts: listing and choosing.
    c.send_option(opt::STRUCTURED_REPLY, &[]);
    assert_eq!(c.opt_reply().kind, rep::ACK);
    c.send_option(opt::LIST_META_CONTEXT, &meta_data("disk", &[]));
    let r = c.opt_replies();
    assert_eq!(r[0].kind, rep::META_CONTEXT);
    assert_eq!(&r[0].data[4..], b"base:allocation");
    c.send_option(
        opt::SET_META_CONTEXT,
        &meta_data("disk", &["x-other:thing"]),
    );
    let r = c.opt_replies();
    assert_eq!((r.len(), r[0].kind), (1, rep::ACK));

    c.send_option(opt::ABORT, &[]);
    assert_eq!(c.opt_reply().kind, rep::ACK);
    assert!(c.closed());
    srv.stop();
}

#[test]
fn broken_handshakes_close_only_their_connection() {
    let srv = serve_new(SIZE, &[], false);
    // Unknown client flags.
    let mut c = srv.connect();
    c.hello(1 << 7);
    assert!(c.closed());
    // A wrong option magic.
    let mut c = srv.connect();
    c.hello(1);
    c.s.write_all(&[0u8; 16]).unwrap();
    assert!(c.closed());
    // EXPORT_NAME of an unknown export (no error reply exists for it).
    let mut c = srv.connect();
    c.hello(1);
    c.send_option(opt::EXPORT_NAME, b"nope");
    assert!(c.closed());
    // A client that leaves in the middle of the greeting.
    drop(srv.connect());
    // The server still serves: EXPORT_NAME with and without the zeros.
    for (flags, tail) in [(1u32, 124usize), (3, 0)] {
        let mut c = srv.connect();
        c.hello(flags);
        c.send_option(opt::EXPORT_NAME, b"disk");
        let b = c.read_n(10 + tail);
        assert_eq!(u64::from_be_bytes(b[..8].try_into().unwrap()), SIZE);
        assert!(b[10..].iter().all(|&x| x == 0));
        c.request(cmd::READ, 0, 1, 0, 512);
        assert_eq!(c.simple(512).error, 0);
    }
    srv.stop();
}

#[test]
fn commands_and_their_errors() {
    let data = pattern(3 << 20, 7);
    let srv = serve_new(SIZE, &data, false);
    let mut c = srv.connect();
    let (size, flags) = c.go(false);
    assert_eq!(size, SIZE);
    for f in [
        tflag::HAS_FLAGS,
        tflag::SEND_FLUSH,
        tflag::SEND_FUA,
        tflag::SEND_TRIM,
        tflag::SEND_WRITE_ZEROES,
        tflag::CAN_MULTI_CONN,
    ] {
        assert!(flags & f != 0, "flag {f:#x} missing from {flags:#x}");
    }
    assert_eq!(flags & (tflag::READ_ONLY | tflag::SEND_DF), 0);

    c.request(cmd::READ, 0, 10, 4096, 8192);
    let r = c.simple(8192);
    assert_eq!((r.error, r.cookie), (0, 10));
    assert!(r.data == data[4096..4096 + 8192]);

    // A write with FUA, then zeros and a trim; each reads back.
    let w = pattern(5000, 99);
    c.request(cmd::WRITE, cflag::FUA, 11, 1_000_000, w.len() as u32);
    c.s.write_all(&w).unwrap();
    assert_eq!(c.simple(0).error, 0);
    c.request(cmd::WRITE_ZEROES, 0, 12, 2 << 20, 65536);
    assert_eq!(c.simple(0).error, 0);
    c.request(cmd::TRIM, 0, 13, 5 << 20, 1 << 20);
    assert_eq!(c.simple(0).error, 0);
    c.request(cmd::CACHE, 0, 14, 0, 1 << 20);
    assert_eq!(c.simple(0).error, 0);
    c.request(cmd::FLUSH, 0, 15, 0, 0);
    assert_eq!(c.simple(0).error, 0);
    c.request(cmd::READ, 0, 16, 1_000_000, 5000);
    assert!(c.simple(5000).data == w);
    c.request(cmd::READ, 0, 17, 2 << 20, 65536);
    assert!(c.simple(65536).data.iter().all(|&b| b == 0));
    c.request(cmd::WRITE_ZEROES, cflag::FAST_ZERO, 18, 0, 512);
    assert_eq!(c.simple(0).error, errno::ENOTSUP);

    // Errors, each answered, none ending the session.
    for (kind, offset, len, want) in [
        (cmd::READ, SIZE - 512, 1024, errno::EINVAL),
        (cmd::READ, u64::MAX - 10, 512, errno::EINVAL),
        (cmd::READ, 0, 64 << 20, errno::EINVAL),
        (cmd::TRIM, SIZE, 512, errno::ENOSPC),
        (cmd::WRITE_ZEROES, SIZE - 512, 4096, errno::ENOSPC),
        (cmd::BLOCK_STATUS, 0, 4096, errno::EINVAL),
        (99, 0, 0, errno::EINVAL),
    ] {
        c.request(kind, 0, 20, offset, len);
        let r = c.simple(0);
        assert_eq!(
            (r.error, r.cookie),
            (want, 20),
            "command {kind} at {offset}+{len}"
        );
    }
    // A write past the end: its payload is still consumed.
    c.request(cmd::WRITE, 0, 21, SIZE - 512, 1024);
    c.s.write_all(&[1u8; 1024]).unwrap();
    assert_eq!(c.simple(0).error, errno::ENOSPC);
    // A write larger than the server takes: refused, payload consumed.
    let big = vec![0x5au8; 33 << 20];
    c.request(cmd::WRITE, 0, 22, 0, big.len() as u32);
    c.s.write_all(&big).unwrap();
    assert_eq!(c.simple(0).error, errno::EINVAL);
    c.request(cmd::READ, 0, 23, 0, 512);
    assert!(
        c.simple(512).data == data[..512],
        "the refused write landed"
    );

    c.request(cmd::DISC, 0, 24, 0, 0);
    assert!(c.closed());
    let image = srv.stop();
    let mut want = data.clone();
    want.resize(SIZE as usize, 0);
    want[1_000_000..1_005_000].copy_from_slice(&w);
    want[2 << 20..(2 << 20) + 65536].fill(0);
    want[5 << 20..6 << 20].fill(0);
    assert!(contents(&image) == want);
    assert!(vdisk::check(&image).unwrap().clean);
}

#[test]
fn structured_reads_and_block_status() {
    let data = pattern(1 << 20, 3);
    let srv = serve_new(SIZE, &data, false);
    let mut c = srv.connect();
    let (_, flags) = c.go(true);
    assert!(flags & tflag::SEND_DF != 0);

    c.request(cmd::READ, cflag::DF, 5, 512, 4096);
    let r = c.any_reply(0);
    assert!(r.structured && r.flags & chunk::FLAG_DONE != 0);
    assert_eq!((r.kind, r.cookie), (chunk::OFFSET_DATA, 5));
    assert_eq!(u64::from_be_bytes(r.data[..8].try_into().unwrap()), 512);
    assert!(r.data[8..] == data[512..512 + 4096]);

    // Without DF, holes come as hole chunks: 1 MiB of data, then 1 MiB of hole.
    c.request(cmd::READ, 0, 30, 0, 2 << 20);
    let first = c.any_reply(0);
    assert_eq!(
        (first.kind, first.flags & chunk::FLAG_DONE),
        (chunk::OFFSET_DATA, 0)
    );
    assert_eq!(u64::from_be_bytes(first.data[..8].try_into().unwrap()), 0);
    assert!(first.data[8..] == data[..]);
    let hole = c.any_reply(0);
    assert_eq!(
        (hole.kind, hole.flags & chunk::FLAG_DONE, hole.cookie),
        (chunk::OFFSET_HOLE, chunk::FLAG_DONE, 30)
    );
    assert_eq!(
        u64::from_be_bytes(hole.data[..8].try_into().unwrap()),
        1 << 20
    );
    assert_eq!(
        u32::from_be_bytes(hole.data[8..12].try_into().unwrap()),
        1 << 20
    );
    // With DF, one data chunk with the zeros in it.
    c.request(cmd::READ, cflag::DF, 31, 0, 2 << 20);
    let whole = c.any_reply(0);
    assert_eq!(
        (whole.kind, whole.flags),
        (chunk::OFFSET_DATA, chunk::FLAG_DONE)
    );
    assert!(whole.data[8..8 + (1 << 20)] == data[..]);
    assert!(whole.data[8 + (1 << 20)..].iter().all(|&b| b == 0));

    c.request(cmd::READ, 0, 6, SIZE, 512);
    let r = c.any_reply(0);
    assert_eq!((r.kind, r.error), (chunk::ERROR, errno::EINVAL));
    let msg_len = u16::from_be_bytes([r.data[4], r.data[5]]) as usize;
    assert!(String::from_utf8_lossy(&r.data[6..6 + msg_len]).contains("past the end"));

    // Block status: 1 MiB of data, then holes (1 MiB blocks).
    c.request(cmd::BLOCK_STATUS, 0, 7, 0, SIZE as u32);
    let r = c.any_reply(0);
    assert_eq!((r.kind, r.cookie), (chunk::BLOCK_STATUS, 7));
    assert_eq!(u32::from_be_bytes(r.data[..4].try_into().unwrap()), 1);
    let ext: Vec<(u32, u32)> = r.data[4..]
        .chunks(8)
        .map(|d| {
            (
                u32::from_be_bytes(d[..4].try_into().unwrap()),
                u32::from_be_bytes(d[4..].try_into().unwrap()),
            )
        })
        .collect();
    assert_eq!(
        ext,
        vec![
            (1 << 20, 0),
            ((SIZE as u32) - (1 << 20), state::HOLE | state::ZERO)
        ]
    );
    // One extent when asked for one, clipped to the request.
    c.request(cmd::BLOCK_STATUS, cflag::REQ_ONE, 8, 4096, (8 << 20) - 4096);
    let r = c.any_reply(0);
    assert_eq!(r.data.len(), 4 + 8);
    assert_eq!(
        u32::from_be_bytes(r.data[4..8].try_into().unwrap()),
        (1 << 20) - 4096
    );
    c.request(cmd::BLOCK_STATUS, 0, 9, SIZE - 512, 4096);
    assert_eq!(c.any_reply(0).error, errno::EINVAL);
    srv.stop();
}

#[test]
fn read_only_exports_refuse_writes() {
    let data = pattern(4096, 1);
    let srv = serve_new(SIZE, &data, true);
    let before = std::fs::read(&srv.image).unwrap();
    let mut c = srv.connect();
    let (_, flags) = c.go(false);
    assert!(flags & tflag::READ_ONLY != 0);
    c.request(cmd::WRITE, 0, 1, 0, 512);
    c.s.write_all(&[9u8; 512]).unwrap();
    assert_eq!(c.simple(0).error, errno::EPERM);
    for kind in [cmd::TRIM, cmd::WRITE_ZEROES] {
        c.request(kind, 0, 2, 0, 512);
        assert_eq!(c.simple(0).error, errno::EPERM);
    }
    c.request(cmd::READ, 0, 3, 0, 4096);
    assert!(c.simple(4096).data == data);
    let image = srv.stop();
    assert!(std::fs::read(&image).unwrap() == before);
}

#[test]
fn bad_request_magic_ends_that_connection_only() {
    let srv = serve_new(SIZE, &[], false);
    let mut c = srv.connect();
    c.go(false);
    c.s.write_all(&[0xffu8; 28]).unwrap();
    assert!(c.closed());
    let mut d = srv.connect();
    d.go(true);
    d.request(cmd::READ, 0, 1, 0, 512);
    assert_eq!(d.any_reply(0).error, 0);
    srv.stop();
}

#[test]
fn acknowledged_writes_survive_clients_that_vanish() {
    let srv = serve_new(SIZE, &[], false);
    let mut c = srv.connect();
    c.go(false);
    // Acknowledged, never flushed by the client.
    let w = pattern(1 << 20, 42);
    c.request(cmd::WRITE, 0, 1, 3 << 20, w.len() as u32);
    c.s.write_all(&w).unwrap();
    assert_eq!(c.simple(0).error, 0);
    // Then a write whose payload stops half-way, and the client is gone.
    c.request(cmd::WRITE, 0, 2, 0, 65536);
    c.s.write_all(&[0xeeu8; 30000]).unwrap();
    drop(c);
    // Another client sees the first write, and none of the second.
    let mut d = srv.connect();
    d.go(false);
    d.request(cmd::READ, 0, 3, 0, 65536);
    assert!(d.simple(65536).data.iter().all(|&b| b == 0));
    drop(d);
    let image = srv.stop();
    let got = contents(&image);
    assert!(got[3 << 20..4 << 20] == w[..]);
    assert!(got[..65536].iter().all(|&b| b == 0));
    assert!(vdisk::check(&image).unwrap().clean);
}

#[test]
fn several_clients_at_once() {
    let srv = serve_new(SIZE, &[], false);
    let mut threads = Vec::new();
    for t in 0..6u8 {
        let mut c = srv.connect();
        threads.push(std::thread::spawn(move || {
            c.go(t % 2 == 0);
            let base = u64::from(t) * (1 << 20);
            // Many requests in flight before any reply is read.
            for i in 0..16u64 {
                let w = pattern(65536, t ^ i as u8);
                c.request(cmd::WRITE, 0, i, base + i * 65536, 65536);
                c.s.write_all(&w).unwrap();
            }
            let mut cookies: Vec<u64> = (0..16).map(|_| c.simple(0).cookie).collect();
            cookies.sort();
            assert_eq!(cookies, (0..16).collect::<Vec<_>>());
            for i in 0..16u64 {
                c.request(cmd::READ, 0, 100 + i, base + i * 65536, 65536);
            }
            for _ in 0..16 {
                let r = c.any_reply(65536);
                let i = r.cookie - 100;
                let data = if r.structured {
                    &r.data[8..]
                } else {
                    &r.data[..]
                };
                assert!(data == pattern(65536, t ^ i as u8), "client {t} block {i}");
            }
            c.request(cmd::FLUSH, 0, 999, 0, 0);
            assert_eq!(c.simple(0).error, 0);
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    let image = srv.stop();
    let got = contents(&image);
    for t in 0..6u64 {
        for i in 0..16u64 {
            let at = (t * (1 << 20) + i * 65536) as usize;
            assert!(got[at..at + 65536] == pattern(65536, t as u8 ^ i as u8));
        }
    }
}

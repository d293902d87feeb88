//! In-kernel forwarding of spliced connections with a BPF sockhash (`proxy.kernel_forwarding`).
//!
//! After a connection's setup, its two sockets (client side and backend side) are put in one
//! `BPF_MAP_TYPE_SOCKHASH`, each under the 4-tuple of the *other* socket... precisely: the entry
//! keyed by socket A's 4-tuple holds A's peer B. A `BPF_PROG_TYPE_SK_SKB` verdict program,
//! attached to the map, runs in the kernel for every segment a socket of the map receives: it
//! builds the key from the receiving socket's addresses and ports (the `__sk_buff` fields
//! `family`, `remote_ip4/6`, `local_ip4/6`, `remote_port`, `local_port`) and returns
//! `bpf_sk_redirect_hash(skb, map, &key, 0)`, which queues the data for transmission on the
//! peer socket. The router process is not woken for the bytes it forwards.
//!
//! There is no BPF toolchain (clang, bpf-linker) on the build machines, so the program is
//! assembled here from raw instructions with the small encoder below and loaded with `bpf(2)`.
//! The constants (instruction classes, helper number, attach types, `__sk_buff` offsets,
//! `bpf_attr` layouts, `tcp_info` offsets) are facts from the kernel's UAPI headers
//! `linux/bpf.h` and `linux/tcp.h` (checked against Debian 12's linux-libc-dev 6.1 headers with
//! `offsetof`).
//!
//! Needs CAP_BPF and CAP_NET_ADMIN (or root) and a kernel with CONFIG_BPF_SYSCALL and
//! CONFIG_NET_SOCK_MSG; `BPF_SK_SKB_VERDICT` (no stream parser) needs Linux 5.13, else the
//! stream parser + stream verdict attach points are used.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering::SeqCst;

// ---- the instruction encoder -------------------------------------------------------------------

/// One eBPF instruction (`struct bpf_insn`): opcode, destination and source registers (4 bits
/// each, dst in the low nibble), a signed 16-bit offset and a signed 32-bit immediate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

/// Registers: r0 return value, r1-r5 arguments, r6-r9 callee-saved, r10 frame pointer.
pub const R0: u8 = 0;
pub const R1: u8 = 1;
pub const R2: u8 = 2;
pub const R3: u8 = 3;
pub const R4: u8 = 4;
pub const R6: u8 = 6;
pub const R7: u8 = 7;
pub const R8: u8 = 8;
pub const R10: u8 = 10;

// Opcode parts (linux/bpf_common.h, linux/bpf.h).
const BPF_LD: u8 = 0x00;
const BPF_LDX: u8 = 0x01;
const BPF_ST: u8 = 0x02;
const BPF_STX: u8 = 0x03;
const BPF_JMP: u8 = 0x05;
const BPF_ALU64: u8 = 0x07;
const BPF_W: u8 = 0x00;
const BPF_DW: u8 = 0x18;
const BPF_IMM: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_K: u8 = 0x00;
const BPF_X: u8 = 0x08;
const BPF_ADD: u8 = 0x00;
const BPF_MOV: u8 = 0xb0;
const BPF_JA: u8 = 0x00;
const BPF_JEQ: u8 = 0x10;
const BPF_JNE: u8 = 0x50;
const BPF_JGT: u8 = 0x20;
const BPF_CALL: u8 = 0x80;
const BPF_EXIT: u8 = 0x90;
/// `src_reg` of a 64-bit immediate load whose `imm` is a map file descriptor.
const BPF_PSEUDO_MAP_FD: u8 = 1;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

/// `dst = src` (64 bits).
pub fn mov64_reg(dst: u8, src: u8) -> Insn {
    insn(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0)
}
/// `dst = imm` (sign-extended to 64 bits).
pub fn mov64_imm(dst: u8, imm: i32) -> Insn {
    insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm)
}
/// `dst += imm` (64 bits).
pub fn add64_imm(dst: u8, imm: i32) -> Insn {
    insn(BPF_ALU64 | BPF_ADD | BPF_K, dst, 0, 0, imm)
}
/// `dst = *(u32 *)(src + off)`.
pub fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
    insn(BPF_LDX | BPF_MEM | BPF_W, dst, src, off, 0)
}
/// `*(u32 *)(dst + off) = src`.
pub fn stx_w(dst: u8, off: i16, src: u8) -> Insn {
    insn(BPF_STX | BPF_MEM | BPF_W, dst, src, off, 0)
}
/// `*(u64 *)(dst + off) = imm`.
pub fn st_dw(dst: u8, off: i16, imm: i32) -> Insn {
    insn(BPF_ST | BPF_MEM | BPF_DW, dst, 0, off, imm)
}
/// `if dst != imm goto +off` (off counts instructions after this one).
pub fn jne_imm(dst: u8, imm: i32, off: i16) -> Insn {
    insn(BPF_JMP | BPF_JNE | BPF_K, dst, 0, off, imm)
}
/// `if dst == imm goto +off`.
pub fn jeq_imm(dst: u8, imm: i32, off: i16) -> Insn {
    insn(BPF_JMP | BPF_JEQ | BPF_K, dst, 0, off, imm)
}
/// `goto +off`.
pub fn ja(off: i16) -> Insn {
    insn(BPF_JMP | BPF_JA, 0, 0, off, 0)
}
/// `dst = map` (a 64-bit immediate load: two instruction slots, the map given by its fd; the
/// kernel replaces it with the map's address).
pub fn ld_map_fd(dst: u8, fd: RawFd) -> [Insn; 2] {
    [
        insn(BPF_LD | BPF_DW | BPF_IMM, dst, BPF_PSEUDO_MAP_FD, 0, fd),
        insn(0, 0, 0, 0, 0),
    ]
}
/// `r0 = helper(r1, ..., r5)`.
pub fn call(helper: i32) -> Insn {
    insn(BPF_JMP | BPF_CALL, 0, 0, 0, helper)
}
/// `return r0`.
pub fn exit() -> Insn {
    insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
}
/// `dst += src` (64 bits).
pub fn add64_reg(dst: u8, src: u8) -> Insn {
    insn(BPF_ALU64 | BPF_ADD | BPF_X, dst, src, 0, 0)
}
/// `dst = *(u64 *)(src + off)`.
pub fn ldx_dw(dst: u8, src: u8, off: i16) -> Insn {
    insn(BPF_LDX | BPF_MEM | BPF_DW, dst, src, off, 0)
}
/// `*(u64 *)(dst + off) = src`.
pub fn stx_dw(dst: u8, off: i16, src: u8) -> Insn {
    insn(BPF_STX | BPF_MEM | BPF_DW, dst, src, off, 0)
}
/// `if dst > src goto +off` (unsigned).
pub fn jgt_reg(dst: u8, src: u8, off: i16) -> Insn {
    insn(BPF_JMP | BPF_JGT | BPF_X, dst, src, off, 0)
}

// ---- kernel facts (linux/bpf.h) -----------------------------------------------------------------

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_SOCKHASH: u32 = 18;
/// `map_flags`: the array can be mmap(2)ed (Linux 5.5).
const BPF_F_MMAPABLE: u32 = 1 << 10;
const BPF_PROG_TYPE_SK_SKB: u32 = 14;
const BPF_SK_SKB_STREAM_PARSER: u32 = 4;
const BPF_SK_SKB_STREAM_VERDICT: u32 = 5;
const BPF_SK_SKB_VERDICT: u32 = 38;
/// `BPF_NOEXIST`: an update fails if the key is there already.
const BPF_NOEXIST: u64 = 1;
/// `BPF_FUNC_sk_redirect_hash`.
const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
const HELPER_SK_REDIRECT_HASH: i32 = 72;
/// Verdicts of an SK_SKB program.
const SK_DROP: i32 = 0;
const SK_PASS: i32 = 1;

/// `struct __sk_buff` offsets readable by SK_SKB programs (all u32).
mod skb {
    pub const LEN: i16 = 0;
    pub const FAMILY: i16 = 88;
    pub const REMOTE_IP4: i16 = 92;
    pub const LOCAL_IP4: i16 = 96;
    pub const REMOTE_IP6: i16 = 100;
    pub const LOCAL_IP6: i16 = 116;
    /// Network byte order in the upper 16 bits (on little-endian machines; see [`super::key`]).
    pub const REMOTE_PORT: i16 = 132;
    /// Host byte order.
    pub const LOCAL_PORT: i16 = 136;
}

/// Size of a map key: see [`key`].
pub const KEY_SIZE: usize = 48;
/// Where the program builds the key on its stack (r10 - 48 .. r10).
const KEY_AT: i16 = -(KEY_SIZE as i16);
/// Where it puts the slot number (the budget array's key), below the key.
const SLOT_AT: i16 = KEY_AT - 8;

/// A budget: one u64 array element triple per receiving socket, in an mmap(2)ed array map.
/// The router writes `limit`; the program writes `redirected` and `paused`.
mod budget {
    pub const LIMIT: i16 = 0;
    pub const REDIRECTED: i16 = 8;
    pub const PAUSED: i16 = 16;
    pub const SIZE: usize = 24;
}

/// The verdict program: builds the receiving socket's key and redirects the data to the socket
/// stored under it (the peer), on the peer's egress. It always returns SK_PASS: with the
/// redirect set (lookup found the peer) that means "redirect"; without (no entry, e.g. while the
/// second entry of a pair is being inserted) the data is queued on the receiving socket itself,
/// where the router reads it as usual. No data is ever dropped.
///
/// Backpressure: the receiving socket's budget (its slot in the budget array, found through the
/// slots map under the same key; see [`Budget`]) caps the bytes redirected in its direction at
/// `limit`, which the router keeps at "bytes the peer socket has taken + a budget". A segment
/// that would go past it sets `paused` and, like every later one (the flag is never cleared),
/// stays on the receiving socket: there it is charged to that socket's receive buffer, so TCP
/// closes the window and the sender waits, and the router copies that direction itself from
/// then on. Segments of one socket are processed one at a time (under the socket's lock), so
/// everything before the pause was redirected and everything after it stays, in order.
pub fn verdict_program(map_fd: RawFd, slots_fd: RawFd, budget_fd: RawFd) -> Vec<Insn> {
    let k = KEY_AT;
    let head = vec![
        // A segment without data (a bare FIN) is not redirected: the peer's psock would try to
        // send 0 bytes, take that for a broken pipe (EPIPE) and stop transmitting. The FIN itself
        // is already recorded by TCP (the router sees it as EPOLLRDHUP and passes it on).
        ldx_w(R2, R1, skb::LEN),             // r2 = skb->len
        jne_imm(R2, 0, 2),                   // data: go on below
        mov64_imm(R0, SK_DROP),              // no data: free the empty skb
        exit(),                              // return SK_DROP
        mov64_reg(R6, R1),                   // r6 = ctx (r1 is clobbered by calls)
        st_dw(R10, k, 0),                    // key[0..8] = 0
        st_dw(R10, k + 8, 0),                // key[8..16] = 0
        st_dw(R10, k + 16, 0),               // key[16..24] = 0
        st_dw(R10, k + 24, 0),               // key[24..32] = 0
        st_dw(R10, k + 32, 0),               // key[32..40] = 0
        st_dw(R10, k + 40, 0),               // key[40..48] = 0
        ldx_w(R2, R6, skb::FAMILY),          // r2 = skb->family
        stx_w(R10, k, R2),                   // key.family = r2
        jne_imm(R2, libc::AF_INET6, 17),     // not IPv6: skip the 16 IPv6 instructions + ja
        ldx_w(R2, R6, skb::REMOTE_IP6),      // r2 = skb->remote_ip6[0]
        stx_w(R10, k + 4, R2),               // key.remote[0..4] = r2
        ldx_w(R2, R6, skb::REMOTE_IP6 + 4),  // r2 = skb->remote_ip6[1]
        stx_w(R10, k + 8, R2),               // key.remote[4..8] = r2
        ldx_w(R2, R6, skb::REMOTE_IP6 + 8),  // r2 = skb->remote_ip6[2]
        stx_w(R10, k + 12, R2),              // key.remote[8..12] = r2
        ldx_w(R2, R6, skb::REMOTE_IP6 + 12), // r2 = skb->remote_ip6[3]
        stx_w(R10, k + 16, R2),              // key.remote[12..16] = r2
        ldx_w(R2, R6, skb::LOCAL_IP6),       // r2 = skb->local_ip6[0]
        stx_w(R10, k + 20, R2),              // key.local[0..4] = r2
        ldx_w(R2, R6, skb::LOCAL_IP6 + 4),   // r2 = skb->local_ip6[1]
        stx_w(R10, k + 24, R2),              // key.local[4..8] = r2
        ldx_w(R2, R6, skb::LOCAL_IP6 + 8),   // r2 = skb->local_ip6[2]
        stx_w(R10, k + 28, R2),              // key.local[8..12] = r2
        ldx_w(R2, R6, skb::LOCAL_IP6 + 12),  // r2 = skb->local_ip6[3]
        stx_w(R10, k + 32, R2),              // key.local[12..16] = r2
        ja(4),                               // skip the IPv4 part
        ldx_w(R2, R6, skb::REMOTE_IP4),      // IPv4: r2 = skb->remote_ip4
        stx_w(R10, k + 4, R2),               // key.remote[0..4] = r2 (rest stays 0)
        ldx_w(R2, R6, skb::LOCAL_IP4),       // r2 = skb->local_ip4
        stx_w(R10, k + 20, R2),              // key.local[0..4] = r2
        ldx_w(R2, R6, skb::REMOTE_PORT),     // r2 = skb->remote_port
        stx_w(R10, k + 36, R2),              // key.remote_port = r2
        ldx_w(R2, R6, skb::LOCAL_PORT),      // r2 = skb->local_port
        stx_w(R10, k + 40, R2),              // key.local_port = r2
    ];
    let redirect = |p: &mut Vec<Op>| {
        p.push(Op::I(mov64_reg(R1, R6))); // arg 1: the skb
        p.extend(ld_map_fd(R2, map_fd).map(Op::I)); // arg 2: the sockhash
        p.extend([
            Op::I(mov64_reg(R3, R10)),            // arg 3: r3 = frame pointer
            Op::I(add64_imm(R3, k as i32)),       //        r3 = &key
            Op::I(mov64_imm(R4, 0)),              // arg 4: flags 0 = egress of the peer
            Op::I(call(HELPER_SK_REDIRECT_HASH)), // r0 = bpf_sk_redirect_hash(skb, map, &key, 0)
        ]);
    };
    let mut p: Vec<Op> = head.into_iter().map(Op::I).collect();
    // The budget of this socket: slot = slots[key]; b = budget[slot].
    p.extend(ld_map_fd(R1, slots_fd).map(Op::I));
    p.extend([
        Op::I(mov64_reg(R2, R10)),
        Op::I(add64_imm(R2, k as i32)),      // r2 = &key
        Op::I(call(HELPER_MAP_LOOKUP_ELEM)), // r0 = &slots[key] or NULL
        Op::J(jeq_imm(R0, 0, 0), "plain"),   // no budget: redirect without one
        Op::I(ldx_w(R2, R0, 0)),             // r2 = slot
        Op::I(stx_w(R10, SLOT_AT, R2)),      // on the stack, as the array's key
    ]);
    p.extend(ld_map_fd(R1, budget_fd).map(Op::I));
    p.extend([
        Op::I(mov64_reg(R2, R10)),
        Op::I(add64_imm(R2, SLOT_AT as i32)), // r2 = &slot
        Op::I(call(HELPER_MAP_LOOKUP_ELEM)),  // r0 = &budget[slot] or NULL
        Op::J(jeq_imm(R0, 0, 0), "plain"),
        Op::I(mov64_reg(R7, R0)),                  // r7 = b (callee-saved)
        Op::I(ldx_dw(R2, R7, budget::PAUSED)),     // r2 = b->paused
        Op::J(jne_imm(R2, 0, 0), "pass"),          // paused: keep it here
        Op::I(ldx_dw(R8, R7, budget::REDIRECTED)), // r8 = b->redirected
        Op::I(ldx_w(R2, R6, skb::LEN)),            // r2 = skb->len
        Op::I(add64_reg(R8, R2)),                  // r8 = redirected after this segment
        Op::I(ldx_dw(R2, R7, budget::LIMIT)),      // r2 = b->limit
        Op::J(jgt_reg(R8, R2, 0), "pause"),        // over the budget: pause
    ]);
    redirect(&mut p);
    p.extend([
        Op::J(jne_imm(R0, SK_PASS, 0), "pass"), // not redirected (no peer): not counted
        Op::I(stx_dw(R7, budget::REDIRECTED, R8)), // b->redirected = r8
        Op::J(ja(0), "pass"),
        Op::L("pause"),
        Op::I(mov64_imm(R2, 1)),
        Op::I(stx_dw(R7, budget::PAUSED, R2)), // b->paused = 1, for good
        Op::L("pass"),
        Op::I(mov64_imm(R0, SK_PASS)), // redirected, or kept by the receiving socket
        Op::I(exit()),
        Op::L("plain"),
    ]);
    redirect(&mut p);
    p.extend([Op::I(mov64_imm(R0, SK_PASS)), Op::I(exit())]);
    assemble(p)
}

/// An instruction, a jump to a label (its offset filled in by [`assemble`]), or a label.
enum Op {
    I(Insn),
    J(Insn, &'static str),
    L(&'static str),
}

/// Resolves the labels: a jump's offset counts the instructions after it up to the label.
fn assemble(ops: Vec<Op>) -> Vec<Insn> {
    let mut at = std::collections::HashMap::new();
    let mut n = 0usize;
    for op in &ops {
        match op {
            Op::L(l) => {
                at.insert(*l, n);
            }
            _ => n += 1,
        }
    }
    let mut out = Vec::with_capacity(n);
    for op in ops {
        match op {
            Op::I(i) => out.push(i),
            Op::J(mut i, l) => {
                i.off = (at[l] as i64 - out.len() as i64 - 1) as i16;
                out.push(i);
            }
            Op::L(_) => {}
        }
    }
    out
}

/// The stream parser (only for kernels without `BPF_SK_SKB_VERDICT`): every segment is one
/// "message" of its full length.
pub fn parser_program() -> Vec<Insn> {
    vec![
        ldx_w(R0, R1, skb::LEN), // r0 = skb->len
        exit(),                  // return r0
    ]
}

// ---- bpf(2) -------------------------------------------------------------------------------------

fn bpf(cmd: libc::c_long, attr: &mut [u64]) -> io::Result<i64> {
    // SAFETY: `attr` is a zero-padded `union bpf_attr` image of the given size; the kernel reads
    // (and for some commands writes) only within it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr() as *mut libc::c_void,
            std::mem::size_of_val(attr) as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `union bpf_attr` as 16 u64 words (128 bytes; the fields used are at the documented offsets).
type Attr = [u64; 16];

fn put_u32(a: &mut Attr, off: usize, v: u32) {
    let w = &mut a[off / 8];
    let mut b = w.to_ne_bytes();
    b[off % 8..off % 8 + 4].copy_from_slice(&v.to_ne_bytes());
    *w = u64::from_ne_bytes(b);
}

fn put_bytes(a: &mut Attr, off: usize, v: &[u8]) {
    for (i, byte) in v.iter().enumerate() {
        let o = off + i;
        let mut b = a[o / 8].to_ne_bytes();
        b[o % 8] = *byte;
        a[o / 8] = u64::from_ne_bytes(b);
    }
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: a file descriptor just returned by bpf(2), owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// A map's shape: type, key and value sizes, flags, name (and what errors call it).
struct MapSpec {
    map_type: u32,
    key_size: usize,
    value_size: usize,
    flags: u32,
    name: &'static [u8],
    what: &'static str,
}

fn create_map(spec: MapSpec, max_entries: u32) -> io::Result<OwnedFd> {
    let mut a: Attr = [0; 16];
    put_u32(&mut a, 0, spec.map_type); // map_type
    put_u32(&mut a, 4, spec.key_size as u32); // key_size
    put_u32(&mut a, 8, spec.value_size as u32); // value_size
    put_u32(&mut a, 12, max_entries); // max_entries
    put_u32(&mut a, 16, spec.flags); // map_flags
    put_bytes(&mut a, 28, spec.name); // map_name
    bpf(BPF_MAP_CREATE, &mut a)
        .map(owned)
        .map_err(|e| io::Error::new(e.kind(), format!("BPF_MAP_CREATE ({}): {e}", spec.what)))
}

/// Loads an SK_SKB program; on failure the error carries the verifier's log.
fn load_program(insns: &[Insn], name: &[u8]) -> io::Result<OwnedFd> {
    let license = b"Apache-2.0\0";
    let mut log = vec![0u8; 64 * 1024];
    let mut a: Attr = [0; 16];
    put_u32(&mut a, 0, BPF_PROG_TYPE_SK_SKB); // prog_type
    put_u32(&mut a, 4, insns.len() as u32); // insn_cnt
    a[1] = insns.as_ptr() as u64; // insns
    a[2] = license.as_ptr() as u64; // license
    put_u32(&mut a, 24, 1); // log_level
    put_u32(&mut a, 28, log.len() as u32); // log_size
    a[4] = log.as_mut_ptr() as u64; // log_buf
    put_bytes(&mut a, 48, name); // prog_name
    match bpf(BPF_PROG_LOAD, &mut a) {
        Ok(fd) => Ok(owned(fd)),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let text = text.trim();
            Err(io::Error::new(
                e.kind(),
                if text.is_empty() {
                    format!("BPF_PROG_LOAD: {e}")
                } else {
                    format!("BPF_PROG_LOAD: {e}; verifier log:\n{text}")
                },
            ))
        }
    }
}

fn attach(map: &OwnedFd, prog: &OwnedFd, attach_type: u32) -> io::Result<()> {
    let mut a: Attr = [0; 16];
    put_u32(&mut a, 0, map.as_raw_fd() as u32); // target_fd
    put_u32(&mut a, 4, prog.as_raw_fd() as u32); // attach_bpf_fd
    put_u32(&mut a, 8, attach_type); // attach_type
    bpf(BPF_PROG_ATTACH, &mut a).map(|_| ())
}

fn elem(map: &OwnedFd, key: &[u8; KEY_SIZE], value: Option<&u32>, flags: u64) -> Attr {
    let mut a: Attr = [0; 16];
    put_u32(&mut a, 0, map.as_raw_fd() as u32); // map_fd
    a[1] = key.as_ptr() as u64; // key
    a[2] = value.map_or(0, |v| v as *const u32 as u64); // value
    a[3] = flags; // flags
    a
}

// ---- the map ------------------------------------------------------------------------------------

/// The loaded program and its maps. Dropping it closes them; sockets still in the map are
/// released by the kernel and go back to ordinary TCP.
#[derive(Debug)]
pub struct SockMap {
    map: OwnedFd,
    /// Socket key -> slot number in `budgets` (BPF hash map; written once per socket).
    slots: OwnedFd,
    budgets: Budgets,
    _progs: Vec<OwnedFd>,
    /// How the program is attached: "sk_skb_verdict" or "stream_parser+stream_verdict".
    pub attach: &'static str,
    /// Set when the kernel was seen delivering more than the program redirected: new
    /// connections are then copied in user space.
    disabled: std::sync::atomic::AtomicBool,
}

/// The budget array, mmap(2)ed: the router reads and writes its elements in place (a
/// `BPF_MAP_UPDATE_ELEM` would overwrite the program's fields), and the free slots.
#[derive(Debug)]
struct Budgets {
    fd: OwnedFd,
    base: *mut u8,
    len: usize,
    free: std::sync::Mutex<std::collections::VecDeque<u32>>,
}

// SAFETY: `base` points to a shared mapping that lives as long as the struct; it is accessed
// only through atomics.
unsafe impl Send for Budgets {}
unsafe impl Sync for Budgets {}

impl Budgets {
    fn new(max_entries: u32) -> io::Result<Budgets> {
        let spec = MapSpec {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size: budget::SIZE,
            flags: BPF_F_MMAPABLE,
            name: b"tandem_budget",
            what: "budget array",
        };
        let fd = create_map(spec, max_entries)?;
        let page = 4096usize;
        let len = (max_entries as usize * budget::SIZE).div_ceil(page) * page;
        // SAFETY: maps `len` bytes of the array (its size rounded up to a page) shared, as the
        // kernel allows for a BPF_F_MMAPABLE array.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("mmap of the budget array: {e}"),
            ));
        }
        Ok(Budgets {
            fd,
            base: base as *mut u8,
            len,
            free: std::sync::Mutex::new((0..max_entries).collect()),
        })
    }

    fn field(&self, slot: u32, off: i16) -> &std::sync::atomic::AtomicU64 {
        let at = slot as usize * budget::SIZE + off as usize;
        assert!(at + 8 <= self.len);
        // SAFETY: in bounds (checked), 8-aligned (element size and offsets are multiples of 8,
        // the mapping is page-aligned), and the mapping lives as long as `self`.
        unsafe { &*(self.base.add(at) as *const std::sync::atomic::AtomicU64) }
    }
}

impl Drop for Budgets {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `new`, used by nothing else any more.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}

impl SockMap {
    /// Creates the sockhash (room for `max_entries` sockets: two per connection) and loads and
    /// attaches the verdict program.
    pub fn load(max_entries: u32) -> io::Result<SockMap> {
        let max_entries = max_entries.max(2);
        // Both keyed by a socket's key; values: a socket fd, a slot number.
        let keyed = |map_type, name, what| MapSpec {
            map_type,
            key_size: KEY_SIZE,
            value_size: 4,
            flags: 0,
            name,
            what,
        };
        let map = create_map(
            keyed(BPF_MAP_TYPE_SOCKHASH, b"tandem_fwd", "sockhash"),
            max_entries,
        )?;
        let slots = create_map(
            keyed(BPF_MAP_TYPE_HASH, b"tandem_slots", "slots"),
            max_entries,
        )?;
        let budgets = Budgets::new(max_entries)?;
        let verdict = load_program(
            &verdict_program(map.as_raw_fd(), slots.as_raw_fd(), budgets.fd.as_raw_fd()),
            b"tandem_verdict",
        )?;
        if attach(&map, &verdict, BPF_SK_SKB_VERDICT).is_ok() {
            return Ok(SockMap {
                map,
                slots,
                budgets,
                _progs: vec![verdict],
                attach: "sk_skb_verdict",
                disabled: Default::default(),
            });
        }
        // Before Linux 5.13: stream parser (one message per segment) + stream verdict.
        let parser = load_program(&parser_program(), b"tandem_parser")?;
        attach(&map, &parser, BPF_SK_SKB_STREAM_PARSER)
            .map_err(|e| io::Error::new(e.kind(), format!("BPF_PROG_ATTACH (parser): {e}")))?;
        attach(&map, &verdict, BPF_SK_SKB_STREAM_VERDICT)
            .map_err(|e| io::Error::new(e.kind(), format!("BPF_PROG_ATTACH (verdict): {e}")))?;
        Ok(SockMap {
            map,
            slots,
            budgets,
            _progs: vec![verdict, parser],
            attach: "stream_parser+stream_verdict",
            disabled: Default::default(),
        })
    }

    /// Stops kernel forwarding for connections set up from now on (those already in the map
    /// go on).
    pub fn disable(&self) {
        self.disabled
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn disabled(&self) -> bool {
        self.disabled.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stores `sock` under `key` (fails if the key is there already).
    pub fn insert(&self, key: &[u8; KEY_SIZE], sock: RawFd) -> io::Result<()> {
        let v = sock as u32;
        bpf(
            BPF_MAP_UPDATE_ELEM,
            &mut elem(&self.map, key, Some(&v), BPF_NOEXIST),
        )
        .map(|_| ())
    }

    pub fn remove(&self, key: &[u8; KEY_SIZE]) -> io::Result<()> {
        bpf(BPF_MAP_DELETE_ELEM, &mut elem(&self.map, key, None, 0)).map(|_| ())
    }

    /// Gives the socket under `key` a budget: at most `limit` bytes redirected from it until
    /// [`SockMap::set_limit`] raises it. Before the socket joins the map.
    pub fn take_budget(&self, key: &[u8; KEY_SIZE], limit: u64) -> io::Result<Budget> {
        let slot = self
            .budgets
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
            .ok_or_else(|| io::Error::other("no free budget slot"))?;
        let b = &self.budgets;
        b.field(slot, budget::LIMIT).store(limit, SeqCst);
        b.field(slot, budget::REDIRECTED).store(0, SeqCst);
        b.field(slot, budget::PAUSED).store(0, SeqCst);
        if let Err(e) = bpf(
            BPF_MAP_UPDATE_ELEM,
            &mut elem(&self.slots, key, Some(&slot), 0),
        ) {
            self.give_back(slot);
            return Err(e);
        }
        Ok(Budget { slot, key: *key })
    }

    /// Ends a budget, after its socket has left the map.
    pub fn release_budget(&self, b: Budget) {
        let _ = bpf(BPF_MAP_DELETE_ELEM, &mut elem(&self.slots, &b.key, None, 0));
        self.give_back(b.slot);
    }

    fn give_back(&self, slot: u32) {
        // Reused last (a queue): a program run still in flight for a socket that just left
        // the map must not touch a slot that was handed out again at once.
        self.budgets
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(slot);
    }

    pub fn set_limit(&self, b: &Budget, limit: u64) {
        self.budgets
            .field(b.slot, budget::LIMIT)
            .store(limit, SeqCst);
    }

    /// Stops the redirects from this socket for good, as if it had gone over its budget. A
    /// segment whose program run read `paused` just before this store may still be redirected;
    /// it was received before, so a backlog computed from the byte counters after this call
    /// includes it.
    pub fn force_pause(&self, b: &Budget) {
        self.budgets.field(b.slot, budget::PAUSED).store(1, SeqCst);
    }

    /// The program has stopped redirecting from this socket (for good).
    pub fn paused(&self, b: &Budget) -> bool {
        self.budgets.field(b.slot, budget::PAUSED).load(SeqCst) != 0
    }

    /// Bytes the program has redirected from this socket.
    pub fn redirected(&self, b: &Budget) -> u64 {
        self.budgets.field(b.slot, budget::REDIRECTED).load(SeqCst)
    }
}

/// A socket's budget (see [`verdict_program`]); given back with [`SockMap::release_budget`].
#[derive(Debug)]
pub struct Budget {
    slot: u32,
    key: [u8; KEY_SIZE],
}

/// The key the program builds for a socket that receives on `local` from `remote`:
///
/// | bytes | field | as the program reads it |
/// |---|---|---|
/// | 0..4 | family | `skb->family`, host order |
/// | 4..20 | remote address | `remote_ip4` (then zeros) or `remote_ip6`, network order |
/// | 20..36 | local address | `local_ip4` or `local_ip6`, network order |
/// | 36..40 | remote port | `remote_port`: 0, 0, then the port in network order |
/// | 40..44 | local port | `local_port`: u32 in host order |
/// | 44..48 | zero | |
///
/// `remote_port` is the socket's `skc_dport` (network order) loaded as a 16-bit value and, on
/// little-endian machines, shifted left by 16 (the kernel's `bpf_convert_ctx_access`), so its
/// four bytes in memory are `0, 0, hi, lo` on either byte order.
pub fn key(local: SocketAddr, remote: SocketAddr) -> [u8; KEY_SIZE] {
    let mut k = [0u8; KEY_SIZE];
    match (local, remote) {
        (SocketAddr::V4(l), SocketAddr::V4(r)) => {
            k[0..4].copy_from_slice(&(libc::AF_INET as u32).to_ne_bytes());
            k[4..8].copy_from_slice(&r.ip().octets());
            k[20..24].copy_from_slice(&l.ip().octets());
        }
        _ => {
            let v6 = |a: SocketAddr| match a {
                SocketAddr::V6(a) => a.ip().octets(),
                SocketAddr::V4(a) => a.ip().to_ipv6_mapped().octets(),
            };
            k[0..4].copy_from_slice(&(libc::AF_INET6 as u32).to_ne_bytes());
            k[4..20].copy_from_slice(&v6(remote));
            k[20..36].copy_from_slice(&v6(local));
        }
    }
    k[38..40].copy_from_slice(&remote.port().to_be_bytes());
    k[40..44].copy_from_slice(&u32::from(local.port()).to_ne_bytes());
    k
}

// ---- Socket options ------------------------------------------------------------------------------

/// getsockopt(2) of an option whose value is plain C data (an int, `tcp_info`).
///
/// # Safety
/// `T` must be a C type for which all-zero bytes, and whatever the kernel writes for this
/// option, are a valid value.
pub unsafe fn get_option<T>(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<T> {
    // SAFETY: valid when zeroed (the caller's promise); getsockopt writes at most `len` bytes.
    let mut v: T = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            &mut v as *mut T as *mut libc::c_void,
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

// ---- TCP_INFO -----------------------------------------------------------------------------------

/// Data bytes this socket has received (`tcpi_bytes_received`, less the FIN) and bytes its peer
/// has acknowledged (`tcpi_bytes_acked`, which includes our FIN once sent), since the
/// connection began.
pub fn tcp_bytes(fd: RawFd) -> io::Result<(u64, u64)> {
    // SAFETY: tcp_info is plain integers; all-zero is valid.
    let info: libc::tcp_info = unsafe { get_option(fd, libc::IPPROTO_TCP, libc::TCP_INFO)? };
    // `tcpi_bytes_received` counts the FIN's sequence number too: not a data byte.
    let fin_in = matches!(
        u32::from(info.tcpi_state),
        // TIME_WAIT, CLOSE (where a socket that got the FIN after sending its own ends:
        // tcp_time_wait() hands on to a timewait socket), CLOSE_WAIT, LAST_ACK, CLOSING
        // (linux/tcp_states.h). CLOSE after a reset counts one byte less: no matter.
        6 | 7 | 8 | 9 | 11
    );
    Ok((
        info.tcpi_bytes_received.saturating_sub(u64::from(fin_in)),
        info.tcpi_bytes_acked,
    ))
}

/// Bytes written into this socket and not yet acknowledged by the peer (`SIOCOUTQ`).
pub fn unacked(fd: RawFd) -> io::Result<u64> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (= TIOCOUTQ) writes one int.
    if unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.max(0) as u64)
}

/// The first mainline kernel with "bpf, sockmap: fix duplicated data transmission" (April
/// 2025, Fixes: 405df89dd52c): before it, when the peer socket's send buffer took a redirected
/// segment only in part, the retry sent the whole segment again — bytes delivered twice. The
/// fix was also backported to some stable series, which a version number cannot tell.
pub const DUPLICATION_FIXED_IN: (u32, u32) = (6, 15);

/// The running kernel's major and minor version (uname(2)).
pub fn kernel_version() -> Option<(u32, u32)> {
    // SAFETY: uname fills the struct we own; release is NUL-terminated.
    let release = unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return None;
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    };
    parse_release(&release)
}

/// "6.18.44-fc-v782" -> (6, 18).
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_releases_parse() {
        assert_eq!(super::parse_release("6.18.44-fc-v782"), Some((6, 18)));
        assert_eq!(super::parse_release("6.1.0-28-amd64"), Some((6, 1)));
        assert_eq!(super::parse_release("5.10"), Some((5, 10)));
        assert_eq!(super::parse_release("linux"), None);
        assert_eq!(super::parse_release("6"), None);
        assert!(super::kernel_version().is_some());
    }

    use super::*;

    #[test]
    fn encoder_matches_the_kernel_encoding() {
        // Reference encodings as `struct bpf_insn` bytes (code, dst|src<<4, off le, imm le).
        let bytes = |i: Insn| {
            let mut b = vec![i.code, i.regs];
            b.extend(i.off.to_le_bytes());
            b.extend(i.imm.to_le_bytes());
            b
        };
        assert_eq!(bytes(mov64_reg(R6, R1)), [0xbf, 0x16, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes(mov64_imm(R0, 1)), [0xb7, 0x00, 0, 0, 1, 0, 0, 0]);
        assert_eq!(
            bytes(add64_imm(R3, -48)),
            [0x07, 0x03, 0, 0, 0xd0, 0xff, 0xff, 0xff]
        );
        assert_eq!(bytes(ldx_w(R2, R6, 88)), [0x61, 0x62, 88, 0, 0, 0, 0, 0]);
        assert_eq!(
            bytes(stx_w(R10, -48, R2)),
            [0x63, 0x2a, 0xd0, 0xff, 0, 0, 0, 0]
        );
        assert_eq!(
            bytes(st_dw(R10, -8, 0)),
            [0x7a, 0x0a, 0xf8, 0xff, 0, 0, 0, 0]
        );
        assert_eq!(bytes(jne_imm(R2, 10, 17)), [0x55, 0x02, 17, 0, 10, 0, 0, 0]);
        assert_eq!(bytes(jeq_imm(R0, 0, 1)), [0x15, 0x00, 1, 0, 0, 0, 0, 0]);
        assert_eq!(bytes(ja(4)), [0x05, 0x00, 4, 0, 0, 0, 0, 0]);
        assert_eq!(bytes(call(72)), [0x85, 0x00, 0, 0, 72, 0, 0, 0]);
        assert_eq!(bytes(exit()), [0x95, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes(add64_reg(R8, R2)), [0x0f, 0x28, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes(ldx_dw(R8, R7, 8)), [0x79, 0x78, 8, 0, 0, 0, 0, 0]);
        assert_eq!(bytes(stx_dw(R7, 16, R2)), [0x7b, 0x27, 16, 0, 0, 0, 0, 0]);
        assert_eq!(bytes(jgt_reg(R8, R2, 3)), [0x2d, 0x28, 3, 0, 0, 0, 0, 0]);
        let [a, b] = ld_map_fd(R2, 7);
        assert_eq!(bytes(a), [0x18, 0x12, 0, 0, 7, 0, 0, 0]);
        assert_eq!(bytes(b), [0; 8]);
        assert_eq!(std::mem::size_of::<Insn>(), 8);
    }

    #[test]
    fn program_jumps_land_where_documented() {
        let p = verdict_program(3, 4, 5);
        // An empty segment returns at once.
        assert_eq!(p[1], jne_imm(R2, 0, 2));
        assert_eq!(p[4], mov64_reg(R6, R1));
        // The family test skips exactly the IPv6 block and its closing `ja`.
        let j = p
            .iter()
            .position(|i| *i == jne_imm(R2, libc::AF_INET6, 17))
            .unwrap();
        let ipv4 = j + 1 + p[j].off as usize;
        assert_eq!(p[ipv4], ldx_w(R2, R6, skb::REMOTE_IP4));
        let ja_at = ipv4 - 1;
        assert_eq!(p[ja_at].code, 0x05);
        assert_eq!(
            p[ja_at + 1 + p[ja_at].off as usize],
            ldx_w(R2, R6, skb::REMOTE_PORT)
        );
        assert_eq!(*p.last().unwrap(), exit());
        // Every jump lands inside the program, and the two labelled exits return SK_PASS.
        for (at, i) in p.iter().enumerate() {
            if i.code & 0x07 == BPF_JMP && i.code != 0x85 && i.code != 0x95 {
                let to = at as i64 + 1 + i.off as i64;
                assert!(to > at as i64 && (to as usize) < p.len(), "jump at {at}");
            }
        }
        let pause = p
            .iter()
            .position(|i| i.code == BPF_JMP | BPF_JGT | BPF_X)
            .unwrap();
        let to = pause + 1 + p[pause].off as usize;
        assert_eq!(p[to], mov64_imm(R2, 1));
        assert_eq!(p[to + 1], stx_dw(R7, budget::PAUSED, R2));
        assert_eq!(p[to + 2], mov64_imm(R0, SK_PASS));
        assert_eq!(p[to + 3], exit());
    }

    #[test]
    fn keys_follow_the_kernel_byte_orders() {
        let k = key(
            "127.0.0.1:5000".parse().unwrap(),
            "127.0.0.2:40001".parse().unwrap(),
        );
        assert_eq!(&k[0..4], &2u32.to_ne_bytes());
        assert_eq!(&k[4..8], &[127, 0, 0, 2]);
        assert_eq!(&k[20..24], &[127, 0, 0, 1]);
        assert_eq!(&k[36..40], &[0, 0, 0x9c, 0x41]); // 40001 = 0x9c41
        assert_eq!(&k[40..44], &5000u32.to_ne_bytes());
        let k6 = key("[::1]:5000".parse().unwrap(), "[::1]:1".parse().unwrap());
        assert_eq!(&k6[0..4], &10u32.to_ne_bytes());
        assert_eq!(k6[19], 1);
        assert_eq!(k6[35], 1);
    }

    /// The program and its maps, or None (and a note) where they cannot be loaded (not root).
    fn loaded() -> Option<SockMap> {
        match SockMap::load(16) {
            Ok(m) => Some(m),
            Err(e) => {
                eprintln!("skipped: cannot load the BPF program here: {e}");
                None
            }
        }
    }

    /// A client connected to a "router" socket `rc`, and the router's socket `rs` connected to
    /// a server; `kc`/`ks` the keys of the router's two sockets.
    struct Pair {
        client: std::net::TcpStream,
        rc: std::net::TcpStream,
        rs: std::net::TcpStream,
        server: std::net::TcpStream,
        kc: [u8; KEY_SIZE],
        ks: [u8; KEY_SIZE],
    }

    impl Pair {
        /// The router's two sockets join the map, each key holding the other socket.
        fn join(&self, m: &SockMap) {
            m.insert(&self.ks, self.rc.as_raw_fd()).unwrap();
            m.insert(&self.kc, self.rs.as_raw_fd()).unwrap();
        }
        fn leave(&self, m: &SockMap) {
            m.remove(&self.kc).unwrap();
            m.remove(&self.ks).unwrap();
        }
    }

    fn pair() -> Pair {
        use std::net::{TcpListener, TcpStream};
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let back = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(front.local_addr().unwrap()).unwrap();
        let (rc, _) = front.accept().unwrap();
        let rs = TcpStream::connect(back.local_addr().unwrap()).unwrap();
        let (server, _) = back.accept().unwrap();
        let kc = key(rc.local_addr().unwrap(), rc.peer_addr().unwrap());
        let ks = key(rs.local_addr().unwrap(), rs.peer_addr().unwrap());
        Pair {
            client,
            rc,
            rs,
            server,
            kc,
            ks,
        }
    }

    /// Two TCP connections through a "router" whose two sockets are joined in the map: what
    /// the client writes reaches the server and back without the router reading anything.
    #[test]
    fn kernel_forwards_both_ways() {
        use std::io::{Read, Write};
        let Some(m) = loaded() else { return };
        eprintln!("attached as {}", m.attach);
        let p = pair();
        p.join(&m);
        (&p.client).write_all(b"hello").unwrap();
        let mut b = [0u8; 5];
        (&p.server).read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hello");
        let big: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
        let big2 = big.clone();
        let server = p.server.try_clone().unwrap();
        let w = std::thread::spawn(move || (&server).write_all(&big2).unwrap());
        let mut got = vec![0u8; big.len()];
        (&p.client).read_exact(&mut got).unwrap();
        assert!(got == big);
        w.join().unwrap();
        let (rx, _) = tcp_bytes(p.rs.as_raw_fd()).unwrap();
        assert_eq!(rx, big.len() as u64);
        p.leave(&m);
    }

    /// With a budget, a receiver that reads nothing holds the sender back: the program redirects
    /// up to the limit, then pauses, and what comes after stays on the router's socket, where
    /// TCP's window stops the sender. Without it (the experiment below) the kernel took 400 MiB.
    #[test]
    fn a_budget_holds_the_sender_back() {
        use std::io::{Read, Write};
        let Some(m) = loaded() else { return };
        let p = pair();
        let (mut client, mut server) = (&p.client, &p.server);
        let limit = 1 << 20;
        let bc = m.take_budget(&p.kc, limit).unwrap();
        let bs = m.take_budget(&p.ks, limit).unwrap();
        p.join(&m);
        // Under the budget: forwarded and counted.
        client.write_all(b"hello").unwrap();
        let mut b = [0u8; 5];
        server.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hello");
        assert_eq!(m.redirected(&bc), 5);
        assert!(!m.paused(&bc));
        // The server reads nothing more: write until the socket stays full for 500 ms.
        client.set_nonblocking(true).unwrap();
        let chunk: Vec<u8> = (0..65536u32).map(|i| (i % 253) as u8).collect();
        let mut sent = 0u64;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            assert!(std::time::Instant::now() < deadline, "sender never blocked");
            match client.write(&chunk) {
                Ok(n) => sent += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut pfd = libc::pollfd {
                        fd: client.as_raw_fd(),
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: poll(2) on one descriptor we own.
                    if unsafe { libc::poll(&mut pfd, 1, 500) } == 0 {
                        break;
                    }
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(m.paused(&bc), "the program paused after {limit} bytes");
        let redirected = m.redirected(&bc);
        assert!(
            redirected <= limit,
            "redirected {redirected} > limit {limit}"
        );
        let (rx, _) = tcp_bytes(p.rc.as_raw_fd()).unwrap();
        eprintln!(
            "sent {} KiB; redirected {} KiB; router's socket received {} KiB",
            sent >> 10,
            redirected >> 10,
            rx >> 10
        );
        assert!(sent < 32 << 20, "the sender got {} MiB in", sent >> 20);
        // The other direction is untouched.
        assert!(!m.paused(&bs));
        p.leave(&m);
        m.release_budget(bc);
        m.release_budget(bs);
    }

    /// Experiment: how much a sender gets into the kernel while the final receiver reads
    /// nothing. `cargo test -p tandem --lib slow_receiver_experiment -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn slow_receiver_experiment() {
        use std::io::Write;
        let m = SockMap::load(16).unwrap();
        let p = pair();
        p.join(&m);
        let (mut client, rc, rs) = (&p.client, &p.rc, &p.rs);
        let sockstat = || std::fs::read_to_string("/proc/net/sockstat").unwrap();
        let slab = || {
            std::fs::read_to_string("/proc/meminfo")
                .unwrap()
                .lines()
                .filter(|l| l.starts_with("Slab") || l.starts_with("MemAvailable"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        eprintln!("before: {} {}", sockstat().lines().nth(1).unwrap(), slab());
        client.set_nonblocking(true).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_secs(3) && sent < 400 << 20 {
            match client.write(&chunk) {
                Ok(n) => sent += n as u64,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        let (rx, _) = tcp_bytes(rc.as_raw_fd()).unwrap();
        let (_, acked) = tcp_bytes(rs.as_raw_fd()).unwrap();
        eprintln!(
            "sent {} MiB in {:?}; router client socket received {} MiB; backend socket: acked {} KiB, unacked {} KiB",
            sent >> 20, t.elapsed(), rx >> 20, acked >> 10, unacked(rs.as_raw_fd()).unwrap() >> 10
        );
        eprintln!("after: {} {}", sockstat().lines().nth(1).unwrap(), slab());
    }
}

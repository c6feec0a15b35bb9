//! Drives the daemon side over anonymous memory from a byte script, the way a
//! hostile client would: used by `fuzz/fuzz_targets/server_slots.rs` and by a unit
//! test. Not part of the API.

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Lane, RespondError, Tag};
use crate::layout::{Geometry, Header, INLINE_MAX, LINE, MAGIC, VERSION};
use crate::region::Region;
use crate::ring::{self, Peek, SlotBody, Space};
use crate::server::ServerCore;

struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes([self.byte()?, self.byte()?, self.byte()?, self.byte()?]))
    }
}

/// A fresh daemon-side channel over anonymous memory, as the daemon sets it up.
pub(crate) fn anonymous_core(geo: Geometry) -> ServerCore {
    let map: MmapRaw = MmapOptions::new().len(geo.region_size()).map_anon().expect("anonymous map").into();
    let region = Region::new(map, geo).expect("page-aligned map");
    region.write_header(&Header {
        magic: MAGIC,
        version: VERSION,
        region_size: geo.region_size() as u32,
        lanes: geo.lanes(),
        slots: geo.slots(),
        slot_size: LINE as u16,
        inline_max: INLINE_MAX as u16,
        data_bytes: geo.data_bytes(),
        lane_stride: geo.lane_stride() as u32,
        reserved: [0; 8],
    });
    region.init_stamps();
    ServerCore::new(region)
}

/// Runs `script` against a fresh daemon-side channel. Panics only on a daemon bug
/// (a request it accepted that breaks its own invariants).
pub fn run(script: &[u8]) {
    let geo = Geometry::new(2, 4, 128).expect("valid geometry");
    let mut core = anonymous_core(geo);
    // A client's own positions, so the script can also publish well-stamped slots.
    let mut sq_pos = [0u32; 2];
    let mut cq_pos = [0u32; 2];
    let mut out = Vec::new();
    let mut s = Script(script);
    let reply = [0xA5u8; 200];
    while let Some(op) = s.byte() {
        let Some(arg) = s.byte() else { break };
        let lane = usize::from(arg % 2);
        match op % 5 {
            // Scribble a word anywhere.
            0 => {
                let (Some(off), Some(v)) = (s.u16(), s.u32()) else { break };
                core.region.poke(usize::from(off), v);
            }
            // Publish a correctly stamped slot with arbitrary contents.
            1 => {
                let (Some(meta), Some(len), Some(off)) = (s.u32(), s.u32(), s.u32()) else { break };
                let sq = core.region.sq(lane as u16);
                if ring::space(&sq, sq_pos[lane]) == Space::Free {
                    let body = SlotBody {
                        kind: meta as u16,
                        flags: (meta >> 16) as u16,
                        tag: meta,
                        len: len % 512,
                        off: off % 256,
                        inline: [arg; INLINE_MAX],
                    };
                    ring::publish(&sq, &mut sq_pos[lane], &body);
                }
            }
            // The daemon scans, as a polling worker (hot lanes first) or after a wake-up.
            2 => {
                core.set_polling(arg & 0x80 != 0);
                if let Ok(Some(meta)) = core.next_request(&mut out) {
                    assert!(out.len() <= geo.max_payload(), "accepted an oversized payload");
                    assert!(meta.lane.0 < geo.lanes(), "invented a lane");
                }
            }
            // The daemon responds (sometimes on a lane that does not exist).
            3 => {
                let len = usize::from(arg) % (reply.len() + 1);
                let lane = Lane(u16::from(arg % 3));
                match core.respond(lane, Tag(u32::from(arg)), 1, &reply[..len]) {
                    Ok(()) | Err(_) => {}
                }
                if let Err(RespondError::NoSuchLane(l)) = core.respond(lane, Tag(0), 0, &[]) {
                    assert!(l.0 >= geo.lanes());
                }
            }
            // The client consumes a response.
            _ => {
                let cq = core.region.cq(lane as u16);
                if let Peek::Ready(_) = ring::peek(&cq, cq_pos[lane]) {
                    ring::release(&cq, &mut cq_pos[lane]);
                }
            }
        }
    }
    core.set_polling(false);
    for _ in 0..16 {
        let _ = core.next_request(&mut out);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_scripts_never_panic() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut script = Vec::new();
        for round in 0..2000 {
            script.clear();
            for _ in 0..(round % 200) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Bias towards polls and well-stamped publishes.
                let b = x as u8;
                script.push(if round % 3 == 0 { b } else { b | 1 });
                script.push((x >> 8) as u8);
            }
            super::run(&script);
        }
    }
}

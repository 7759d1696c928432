//! L'Ecuyer-CMRG (MRG32k3a) streams, exactly as R's `parallel::nextRNGStream` makes them, so a
//! daemon's `.Random.seed` matches what R users get from R's mirai.

/// The six state words of an MRG32k3a generator (R's `.Random.seed[2:7]`).
pub type Stream = [u32; 6];

/// R's RNG kind code for L'Ecuyer-CMRG with Inversion normals: `.Random.seed[1]`.
pub const R_KIND_CODE: i32 = 10407;

const M1: u64 = 4_294_967_087;
const M2: u64 = 4_294_944_443;

/// A1^(2^127) mod m1 and A2^(2^127) mod m2 (L'Ecuyer's RngStreams constants).
const A1P127: [[u64; 3]; 3] = [
    [2_427_906_178, 3_580_155_704, 949_770_784],
    [226_153_695, 1_230_515_664, 3_580_155_704],
    [1_988_835_001, 986_791_581, 1_230_515_664],
];
const A2P127: [[u64; 3]; 3] = [
    [1_464_411_153, 277_697_599, 1_610_723_613],
    [32_183_930, 1_464_411_153, 1_022_607_788],
    [2_824_425_944, 32_183_930, 2_093_834_863],
];

fn mat_vec(a: &[[u64; 3]; 3], v: [u64; 3], m: u64) -> [u64; 3] {
    let mut out = [0u64; 3];
    for (row, o) in a.iter().zip(out.iter_mut()) {
        let mut acc = 0u64;
        for (x, y) in row.iter().zip(v) {
            acc = (acc + (x * y) % m) % m;
        }
        *o = acc;
    }
    out
}

/// The next stream: the state advanced by 2^127 steps (R's `nextRNGStream`).
pub fn next_stream(s: Stream) -> Stream {
    let a = mat_vec(&A1P127, [s[0], s[1], s[2]].map(u64::from), M1);
    let b = mat_vec(&A2P127, [s[3], s[4], s[5]].map(u64::from), M2);
    [a[0], a[1], a[2], b[0], b[1], b[2]].map(|x| x as u32)
}

/// The stream R's `set.seed(seed, kind = "L'Ecuyer-CMRG")` produces: the seed scrambled by
/// R's linear congruential initialiser. Returns `None` in the rare case where R itself would
/// fall back to a time-based seed (a state word out of range), which cannot be reproduced.
pub fn stream_from_seed(seed: i32) -> Option<Stream> {
    let mut x = seed as u32;
    for _ in 0..50 {
        x = x.wrapping_mul(69069).wrapping_add(1);
    }
    let mut s = [0u32; 6];
    for word in s.iter_mut() {
        x = x.wrapping_mul(69069).wrapping_add(1);
        *word = x;
    }
    let valid =
        |words: &[u32], m: u64| words.iter().any(|&w| w != 0) && words.iter().all(|&w| u64::from(w) < m);
    (valid(&s[..3], M1) && valid(&s[3..], M2)).then_some(s)
}

/// A stream seeded from the operating system, for hosts given no seed.
pub fn random_stream() -> Stream {
    loop {
        let mut bytes = [0u8; 4];
        // Without OS randomness a predictable stream is the best there is; seeds are not secrets.
        if getrandom::getrandom(&mut bytes).is_err() {
            bytes = (crate::clock::now_ms() as u32 ^ std::process::id()).to_ne_bytes();
        }
        if let Some(s) = stream_from_seed(i32::from_ne_bytes(bytes)) {
            return s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_stays_in_range() {
        let mut s = stream_from_seed(1).unwrap();
        for _ in 0..100 {
            s = next_stream(s);
            assert!(s[..3].iter().all(|&w| u64::from(w) < M1));
            assert!(s[3..].iter().all(|&w| u64::from(w) < M2));
        }
    }
}

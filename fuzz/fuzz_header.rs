//! Fuzz target for the safetensors header reader (`core::checkpoint::read_header`),
//! corpus-free and on stable Rust: valid files are built, then mutated at random (bit
//! flips, byte overwrites, truncations, insertions, length-field rewrites, spliced JSON),
//! and each mutant is read. The reader must never panic, and whatever it accepts must lie
//! within the file and match its dtype and shape.
//!
//!     cargo run --release --example fuzz_header -- 1000000 [seed]

use _fastload::core::checkpoint::read_header;
use std::panic;

/// xorshift64*: a dependency-free, reproducible source of mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const DTYPES: [(&str, usize); 6] = [
    ("F32", 4),
    ("F16", 2),
    ("BF16", 2),
    ("I64", 8),
    ("U8", 1),
    ("BOOL", 1),
];

/// A valid file of a few tensors.
fn seed_file(rng: &mut Rng) -> Vec<u8> {
    let mut header = String::from("{");
    let mut offset = 0;
    for i in 0..1 + rng.below(4) {
        let (dtype, size) = DTYPES[rng.below(DTYPES.len())];
        let shape: Vec<usize> = (0..rng.below(3)).map(|_| rng.below(5)).collect();
        let n: usize = shape.iter().product::<usize>() * size;
        header.push_str(&format!(
            "\"t{i}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape:?},\"data_offsets\":[{offset},{}]}},",
            offset + n
        ));
        offset += n;
    }
    header.push_str("\"__metadata__\":{\"format\":\"np\"}}");
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend(header.as_bytes());
    file.extend((0..offset).map(|i| i as u8));
    file
}

const TOKENS: [&[u8]; 12] = [
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"-1",
    b"18446744073709551615",
    b"\"F64\"",
    b"\"data_offsets\"",
    b"\"shape\"",
];

fn mutate(file: &mut Vec<u8>, rng: &mut Rng) {
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(file.len());
        match rng.below(7) {
            0 if !file.is_empty() => file[at] ^= 1 << rng.below(8),
            1 if !file.is_empty() => file[at] = rng.next() as u8,
            2 => file.truncate(at),
            3 => file.insert(at.min(file.len()), rng.next() as u8),
            4 if file.len() >= 8 => {
                let len = match rng.below(3) {
                    0 => rng.next(),
                    1 => rng.below(file.len() + 16) as u64,
                    _ => u64::from_le_bytes(file[..8].try_into().unwrap()) ^ (1 << rng.below(12)),
                };
                file[..8].copy_from_slice(&len.to_le_bytes());
            }
            5 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                let at = at.min(file.len());
                file.splice(at..at, token.iter().copied());
            }
            _ => file.extend((0..rng.below(16)).map(|_| rng.next() as u8)),
        }
    }
}

fn check(file: &[u8]) -> bool {
    match read_header(file) {
        Ok(header) => {
            for entry in &header.entries {
                assert!(entry.bytes.start <= entry.bytes.end && entry.bytes.end <= file.len());
                assert!(entry.bytes.start >= 8);
            }
            true
        }
        Err(reason) => {
            assert!(!reason.is_empty());
            false
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0x5eed);
    let mut rng = Rng(seed | 1);
    let (mut accepted, mut refused) = (0u64, 0u64);
    for run in 0..runs {
        let mut file = seed_file(&mut rng);
        if run % 8 != 0 {
            mutate(&mut file, &mut rng);
        }
        match panic::catch_unwind(|| check(&file)) {
            Ok(true) => accepted += 1,
            Ok(false) => refused += 1,
            Err(_) => {
                eprintln!("crash on input ({} bytes): {:?}", file.len(), file);
                std::process::exit(1);
            }
        }
    }
    println!("{runs} executions, no crash: {accepted} files accepted, {refused} refused");
}

//! The work every request does: SHA-256 chained over its own digest.
//!
//! The Python servers' copies (servers/*/src/*/hashing.py) and this one are held to the same
//! known answers, servers/vectors.json (the `known_answers` test).

use sha2::{Digest, Sha256};

/// Hex of the last digest after hashing `data`, then each 32-byte digest, `rounds` times in all.
pub fn hash_chain(data: &[u8], rounds: u32) -> String {
    assert!(rounds >= 1, "rounds must be at least 1, got {}", rounds);
    let mut digest = Sha256::digest(data);
    for _ in 1..rounds {
        digest = Sha256::digest(digest);
    }
    format!("{:x}", digest)
}

#[cfg(test)]
mod tests {
    use super::hash_chain;
    use std::path::Path;

    #[test]
    fn known_answers() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vectors.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {}", path.display(), e));
        let file: serde_json::Value = serde_json::from_str(&text).expect("vectors.json is JSON");
        // The list, or an object holding it under "vectors" (the file's comment sits beside it).
        let vectors = file
            .get("vectors")
            .unwrap_or(&file)
            .as_array()
            .expect("vectors.json lists vectors");
        assert!(!vectors.is_empty());
        for vector in vectors {
            let input = vector["input"].as_str().expect("input");
            let rounds = vector["rounds"].as_u64().expect("rounds") as u32;
            assert_eq!(
                hash_chain(input.as_bytes(), rounds),
                vector["hex"].as_str().expect("hex"),
                "{}",
                vector
            );
        }
    }
}

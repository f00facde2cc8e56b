package main

import (
	"crypto/sha256"
	"encoding/hex"
)

// hashChain is the work every request does: the hex of the last digest after hashing data, then
// each 32-byte digest, rounds times in all. The Python servers' src/*/hashing.py are its twins;
// servers/vectors.json holds all three to the same answers.
func hashChain(data []byte, rounds int) string {
	if rounds < 1 {
		panic("hashChain: rounds must be at least 1")
	}
	digest := sha256.Sum256(data)
	for i := 1; i < rounds; i++ {
		digest = sha256.Sum256(digest[:])
	}
	return hex.EncodeToString(digest[:])
}

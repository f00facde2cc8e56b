package main

import (
	"encoding/json"
	"os"
	"testing"
)

// TestKnownAnswers holds hashChain to servers/vectors.json, the answers every server's hash
// code is checked against (server.yaml's known_answers runs this test alone).
func TestKnownAnswers(t *testing.T) {
	raw, err := os.ReadFile("../vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Vectors []struct {
			Input  string `json:"input"`
			Rounds int    `json:"rounds"`
			Hex    string `json:"hex"`
		} `json:"vectors"`
	}
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	if len(file.Vectors) == 0 {
		t.Fatal("../vectors.json holds no vectors")
	}
	for _, v := range file.Vectors {
		if got := hashChain([]byte(v.Input), v.Rounds); got != v.Hex {
			t.Errorf("hashChain(%q, %d) = %s, want %s", v.Input, v.Rounds, got, v.Hex)
		}
	}
}

func TestHashChainRefusesZeroRounds(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("hashChain(..., 0) did not panic")
		}
	}()
	hashChain([]byte("input-1"), 0)
}

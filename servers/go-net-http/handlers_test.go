package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// A fixed instant, in unix nanoseconds.
const instant = int64(1_700_000_000_123_456_789)

// serve runs the handler as main does (guards, limits, connections) with its clock fixed at
// instant, on a free loopback port.
func serve(t *testing.T, rounds int, adjust ...func(*http.Server)) *httptest.Server {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	ts.Config = newServer("", guarded(newHandler(rounds, func() int64 { return instant })))
	for _, f := range adjust {
		f(ts.Config)
	}
	ts.Listener = guardedListener{ts.Listener}
	ts.Start()
	t.Cleanup(ts.Close)
	return ts
}

func fetch(t *testing.T, ts *httptest.Server, method, path string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// chain is the contract's hash, computed here with crypto/sha256 itself.
func chain(input string, rounds int) string {
	digest := sha256.Sum256([]byte(input))
	for i := 1; i < rounds; i++ {
		digest = sha256.Sum256(digest[:])
	}
	return hex.EncodeToString(digest[:])
}

func checkHeader(t *testing.T, resp *http.Response, name, want string) {
	t.Helper()
	if got := resp.Header.Values(name); len(got) != 1 || got[0] != want {
		t.Errorf("%s %s: %s is %q, want %q", resp.Request.Method, resp.Request.URL.Path, name, got, want)
	}
}

func TestHashIsTheChainOverTheInstant(t *testing.T) {
	for _, rounds := range []int{1, 100} {
		t.Run(strconv.Itoa(rounds), func(t *testing.T) {
			resp, body := fetch(t, serve(t, rounds), "GET", "/hash")
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			want := fmt.Sprintf(`{"hash":"%s","timestamp":%d,"source":"go-net-http"}`,
				chain(fmt.Sprintf("input-%d", instant), rounds), instant/1_000_000)
			if string(body) != want {
				t.Errorf("body %s, want %s", body, want)
			}
			var payload map[string]any
			if err := json.Unmarshal(body, &payload); err != nil || len(payload) != 3 {
				t.Errorf("body %s is not a JSON object of three keys (%v)", body, err)
			}
			checkHeader(t, resp, "Content-Type", "application/json")
			checkHeader(t, resp, "Content-Length", strconv.Itoa(len(body)))
			checkHeader(t, resp, "Cache-Control", "no-store")
		})
	}
}

func TestHashTimestampIsMillisecondsOfTheSameInstant(t *testing.T) {
	resp, body := fetch(t, serve(t, 100), "GET", "/hash")
	var payload struct{ Timestamp json.Number }
	if err := json.Unmarshal(body, &payload); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%d %s (%v)", resp.StatusCode, body, err)
	}
	if payload.Timestamp.String() != "1700000000123" {
		t.Errorf("timestamp %s, want 1700000000123 (an integer)", payload.Timestamp)
	}
}

func TestHealth(t *testing.T) {
	resp, body := fetch(t, serve(t, 100), "GET", "/health")
	if resp.StatusCode != 200 || string(body) != "OK" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	checkHeader(t, resp, "Content-Type", "text/plain; charset=utf-8")
	checkHeader(t, resp, "Content-Length", "2")
	checkHeader(t, resp, "Cache-Control", "no-store")
}

func TestHeadAnswersAsGetWithoutTheBody(t *testing.T) {
	ts := serve(t, 100)
	for _, path := range []string{"/hash", "/health"} {
		get, getBody := fetch(t, ts, "GET", path)
		head, headBody := fetch(t, ts, "HEAD", path)
		if head.StatusCode != get.StatusCode || head.StatusCode != 200 {
			t.Errorf("HEAD %s: status %d, GET %d", path, head.StatusCode, get.StatusCode)
		}
		if len(headBody) != 0 {
			t.Errorf("HEAD %s: body %q", path, headBody)
		}
		for _, name := range []string{"Content-Type", "Content-Length", "Cache-Control"} {
			checkHeader(t, head, name, get.Header.Get(name))
		}
		checkHeader(t, head, "Content-Length", strconv.Itoa(len(getBody)))
	}
}

func TestOtherMethodsAre405WithAllow(t *testing.T) {
	ts := serve(t, 100)
	for _, path := range []string{"/hash", "/health"} {
		for _, method := range []string{"POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW"} {
			resp, _ := fetch(t, ts, method, path)
			if resp.StatusCode != 405 {
				t.Errorf("%s %s: status %d", method, path, resp.StatusCode)
			}
			checkHeader(t, resp, "Allow", "GET, HEAD")
			checkHeader(t, resp, "Cache-Control", "no-store")
		}
	}
}

func TestOtherPathsAre404(t *testing.T) {
	ts := serve(t, 100)
	for _, path := range []string{"/", "/missing", "/hash/", "/health/x", "/HASH"} {
		for _, method := range []string{"GET", "HEAD", "POST"} {
			resp, _ := fetch(t, ts, method, path)
			if resp.StatusCode != 404 {
				t.Errorf("%s %s: status %d", method, path, resp.StatusCode)
			}
			checkHeader(t, resp, "Cache-Control", "no-store")
		}
	}
}

func TestQueryStringsDoNotChangeTheRoute(t *testing.T) {
	resp, body := fetch(t, serve(t, 100), "GET", "/health?x=1")
	if resp.StatusCode != 200 || !strings.EqualFold(string(body), "OK") {
		t.Errorf("%d %q", resp.StatusCode, body)
	}
}

package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

const host = "Host: bench\r\n"

type exchange struct {
	responses []*http.Response
	closed    bool // the server hung up (FIN or reset) after its answers
}

func (e exchange) statuses() []int {
	var s []int
	for _, r := range e.responses {
		s = append(s, r.StatusCode)
	}
	return s
}

// send writes payload in one write on a fresh connection and reads until expect answers have
// come and then either the close or a quiet second (enough for a second, smuggled answer).
func send(t *testing.T, ts interface{ addr() string }, payload string, expect int) exchange {
	t.Helper()
	conn, err := net.Dial("tcp", ts.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, payload); err != nil {
		t.Fatal(err)
	}
	reader := bufio.NewReader(conn)
	var e exchange
	for {
		wait := 5 * time.Second
		if len(e.responses) >= expect {
			wait = time.Second
		}
		conn.SetReadDeadline(time.Now().Add(wait))
		resp, err := http.ReadResponse(reader, nil)
		if err != nil {
			var timeout net.Error
			e.closed = !(errors.As(err, &timeout) && timeout.Timeout())
			return e
		}
		if _, err := io.ReadAll(resp.Body); err != nil {
			t.Fatalf("reading an answer's body: %v", err)
		}
		e.responses = append(e.responses, resp)
	}
}

type listening struct{ address string }

func (l listening) addr() string { return l.address }

func serveRaw(t *testing.T, adjust ...func(*http.Server)) listening {
	return listening{strings.TrimPrefix(serve(t, 100, adjust...).URL, "http://")}
}

func TestTheServersLimits(t *testing.T) {
	s := newServer("", nil)
	if s.ReadHeaderTimeout != 10*time.Second || s.IdleTimeout != 75*time.Second || s.ReadTimeout != 0 || s.WriteTimeout != 0 {
		t.Errorf("ReadHeaderTimeout %v, IdleTimeout %v, ReadTimeout %v, WriteTimeout %v; want 10 s, 75 s, none, none",
			s.ReadHeaderTimeout, s.IdleTimeout, s.ReadTimeout, s.WriteTimeout)
	}
}

// A head cut short by the deadline is answered 408 or hung up on, never answered otherwise.
func TestAHeadNotCompleteInTimeIs408OrAClose(t *testing.T) {
	ts := serveRaw(t, func(s *http.Server) { s.ReadHeaderTimeout = 300 * time.Millisecond })
	for _, partial := range []string{"G", "GET /hea", "GET /health HTTP/1.1\r", "GET /health HTTP/1.1\r\nX-Slow: a", ""} {
		e := send(t, ts, partial, 1)
		if got := e.statuses(); !e.closed || len(got) > 1 || len(got) == 1 && got[0] != 408 {
			t.Errorf("%q: answered %v, closed %v; want a 408 or nothing, and a close", partial, got, e.closed)
		}
	}
}

func TestHostileInputGetsOne4xxAndAClose(t *testing.T) {
	ts := serveRaw(t)
	for _, c := range []struct {
		name, payload string
		status        int
	}{
		// Conflicting lengths hide a second request (GET /health) in what one reading calls a
		// body: it must never be answered.
		{"Content-Length and Transfer-Encoding", "POST /hash HTTP/1.1\r\n" + host +
			"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /health HTTP/1.1\r\n" + host + "\r\n", 405},
		{"two different Content-Lengths", "POST /hash HTTP/1.1\r\n" + host +
			"Content-Length: 0\r\nContent-Length: 41\r\n\r\nGET /health HTTP/1.1\r\n" + host + "\r\n", 400},
		{"chunked body on a GET", "GET /health HTTP/1.1\r\n" + host +
			"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /health HTTP/1.1\r\n" + host + "\r\n", 200},
		{"unknown Transfer-Encoding", "POST /hash HTTP/1.1\r\n" + host + "Transfer-Encoding: foo\r\n\r\n", 400},
		{"unknown HTTP version", "GET /health HTTP/9.9\r\n" + host + "\r\n", 400},
		{"obsolete line folding", "GET /health HTTP/1.1\r\n" + host + "X-A: a\r\n b\r\n\r\n", 400},
		{"folding with a tab", "GET /health HTTP/1.1\r\n" + host + "X-A: a\r\n\tb\r\n\r\n", 400},
		{"garbage request line", "GARBAGE\r\n\r\n", 400},
		{"NUL in a header value", "GET /health HTTP/1.1\r\n" + host + "X-A: a\x00b\r\n\r\n", 400},
		{"101 header fields", "GET /health HTTP/1.1\r\n" + host + fieldLines(100) + "\r\n", 431},
		{"2,000 header fields", "GET /health HTTP/1.1\r\n" + host + fieldLines(1999) + "\r\n", 431},
		{"a head over 32 KiB", head(headLimit + 1), 431},
		{"1 MB header", "GET /health HTTP/1.1\r\n" + host + "X-Big: " + strings.Repeat("a", 1_000_000) + "\r\n\r\n", 431},
	} {
		e := send(t, ts, c.payload, 1)
		if got := e.statuses(); len(got) != 1 || got[0] != c.status || !e.closed {
			t.Errorf("%s: answered %v, closed %v; want one %d and a close", c.name, got, e.closed, c.status)
			continue
		}
		resp := e.responses[0]
		if resp.Header.Get("Cache-Control") != "no-store" || resp.ContentLength < 0 {
			t.Errorf("%s: Cache-Control %q, Content-Length %d", c.name, resp.Header.Get("Cache-Control"), resp.ContentLength)
		}
	}
}

func fieldLines(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "X-%d: v\r\n", i)
	}
	return b.String()
}

// head is a GET /health head of exactly size bytes.
func head(size int) string {
	start, end := "GET /health HTTP/1.1\r\n"+host+"X-Pad: ", "\r\n\r\n"
	return start + strings.Repeat("a", size-len(start)-len(end)) + end
}

func TestAHeadOfExactly32KiBIsServed(t *testing.T) {
	e := send(t, serveRaw(t), head(headLimit), 1)
	if got := e.statuses(); len(got) != 1 || got[0] != 200 || e.closed {
		t.Errorf("answered %v, closed %v; want 200, kept open", got, e.closed)
	}
}

func TestHundredHeaderFieldsAreServed(t *testing.T) {
	e := send(t, serveRaw(t), "GET /health HTTP/1.1\r\n"+host+fieldLines(99)+"\r\n", 1)
	if got := e.statuses(); len(got) != 1 || got[0] != 200 || e.closed {
		t.Errorf("answered %v, closed %v; want 200, kept open", got, e.closed)
	}
}

func TestUnknownMethodIs405AndKeepsTheConnection(t *testing.T) {
	e := send(t, serveRaw(t), "BREW /hash HTTP/1.1\r\n"+host+"\r\n", 1)
	if got := e.statuses(); len(got) != 1 || got[0] != 405 || e.closed {
		t.Errorf("answered %v, closed %v; want 405, kept open", got, e.closed)
	}
}

// An announced body that never comes: answered at once and closed, not waited for.
func TestAWithheldBodyIsNotWaitedFor(t *testing.T) {
	started := time.Now()
	e := send(t, serveRaw(t), "POST /hash HTTP/1.1\r\n"+host+"Content-Length: 1000\r\n\r\n", 1)
	if got := e.statuses(); len(got) != 1 || got[0] != 405 || !e.closed || time.Since(started) > 3*time.Second {
		t.Errorf("answered %v, closed %v after %v; want 405 and a close at once", got, e.closed, time.Since(started))
	}
}

func TestPipelinedRequestsAreAnsweredInOrder(t *testing.T) {
	var payload strings.Builder
	var want []int
	for i := 0; i < 20; i++ {
		for _, p := range []struct {
			path   string
			status int
		}{{"/health", 200}, {"/hash", 200}, {"/missing", 404}} {
			fmt.Fprintf(&payload, "GET %s HTTP/1.1\r\n%s\r\n", p.path, host)
			want = append(want, p.status)
		}
	}
	e := send(t, serveRaw(t), payload.String(), len(want))
	if fmt.Sprint(e.statuses()) != fmt.Sprint(want) || e.closed {
		t.Errorf("answered %v (closed %v), want %v", e.statuses(), e.closed, want)
	}
}

// chunks is a connection whose reads return the given chunks, one per read.
type chunks struct {
	net.Conn
	left []string
}

func (c *chunks) Read(p []byte) (int, error) {
	if len(c.left) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.left[0])
	c.left = c.left[1:]
	return n, nil
}

func readAll(conn net.Conn) (string, error) {
	var got bytes.Buffer
	p := make([]byte, 64)
	for {
		n, err := conn.Read(p)
		got.Write(p[:n])
		if err != nil {
			return got.String(), err
		}
	}
}

func TestFoldsAreFoundAcrossReads(t *testing.T) {
	for _, c := range []struct {
		chunks []string
		want   string
		err    error
	}{
		{[]string{"GET / HTTP/1.1\r\nX: a\r\n", " b\r\n\r\n"}, "GET / HTTP/1.1\r\nX: a\r\n", errObsFold},
		{[]string{"GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n"}, "GET / HTTP/1.1\r\nX: a\r\n", errObsFold},
		{[]string{"GET / HTTP/1.1\nX: a\n b\n\n"}, "GET / HTTP/1.1\nX: a\n", errObsFold},
		{[]string{" GET / HTTP/1.1\r\n\r\n"}, "", errObsFold},
		{[]string{"GET / HTTP/1.1\r\nX: a b\r\n", "\r\n", "GET /x HTTP/1.1\r\n\r\n"}, "GET / HTTP/1.1\r\nX: a b\r\n\r\nGET /x HTTP/1.1\r\n\r\n", io.EOF},
	} {
		got, err := readAll(&guardedConn{Conn: &chunks{left: c.chunks}, afterLF: true})
		if got != c.want || err != c.err {
			t.Errorf("%q: read %q, %v; want %q, %v", c.chunks, got, err, c.want, c.err)
		}
	}
}

func TestOnlyNetHTTPsOwnErrorAnswersAreRewritten(t *testing.T) {
	own := "HTTP/1.1 505 HTTP Version Not Supported: unsupported protocol version" + string(goErrorHeaders) +
		"505 HTTP Version Not Supported: unsupported protocol version"
	got, ok := rewriteGoError([]byte(own), false)
	want := "HTTP/1.1 400 Bad Request: unsupported protocol version\r\nCache-Control: no-store\r\nConnection: close\r\n" +
		"Content-Length: 45\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n400 Bad Request: unsupported protocol version"
	if !ok || string(got) != want {
		t.Errorf("rewrote %q to %q, want %q", own, got, want)
	}
	handlers := "HTTP/1.1 404 Not Found\r\nCache-Control: no-store\r\nContent-Length: 9\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nNot Found"
	if _, ok := rewriteGoError([]byte(handlers), false); ok {
		t.Errorf("a handler's answer was rewritten")
	}
}

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// How long a connection closed on an unread body waits for the client's FIN after ours (read
// and discarded meanwhile): closing on unread bytes would send a reset, which can destroy the
// answer just written. stdlib-style's LINGER, as gunicorn's close_graceful.
const linger = 2 * time.Second

// guardedListener hands net/http connections that fix what it does below the handler, on the
// bytes themselves, where no handler can reach.
type guardedListener struct{ net.Listener }

func (l guardedListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &guardedConn{Conn: conn, afterLF: true}, nil
}

var (
	errObsFold    = errors.New("obsolete line folding")
	errBodyUnread = errors.New("the request's body is not read")
)

type guardedConn struct {
	net.Conn
	afterLF  bool        // the last byte read was a line feed
	refused  error       // sticky: every read after a fold fails
	skipBody atomic.Bool // set by a handler (skipBody): nothing more is read, and closing lingers
	// The read deadline net/http set last, in unix nanoseconds (0: none).
	readDeadline atomic.Int64
}

func (c *guardedConn) SetReadDeadline(t time.Time) error {
	var ns int64
	if !t.IsZero() {
		ns = t.UnixNano()
	}
	c.readDeadline.Store(ns)
	return c.Conn.SetReadDeadline(t)
}

// headTimedOut says whether the deadline net/http set for reading has passed. Its deadlines
// at or before time.Unix(1, 0) are not the head's: they interrupt its own background read.
func (c *guardedConn) headTimedOut() bool {
	deadline := c.readDeadline.Load()
	return deadline > int64(time.Second) && time.Now().UnixNano() >= deadline
}

type connKey struct{}

// connContext puts the connection in its requests' contexts (Server.ConnContext), where
// skipBody finds it.
func connContext(ctx context.Context, conn net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, conn)
}

// skipBody makes the connection of r read nothing more. Once the handler has answered,
// net/http closes the request's body, which reads up to 256 KiB of what is left of it, with no
// deadline: an announced body that never comes would hold the connection until the client
// goes. The caller also answers with `Connection: close`.
func skipBody(r *http.Request) {
	if conn, ok := r.Context().Value(connKey{}).(*guardedConn); ok {
		conn.skipBody.Store(true)
	}
}

// Read refuses obsolete line folding (a line starting with a space or a tab, RFC 9112 §5.2):
// net/http's textproto joins it to the line before and serves the request, where the Python
// servers answer 400, and two parsers that disagree on a head's fields are how requests get
// smuggled past a proxy. The bytes before the fold are delivered; the next read fails, which
// net/http answers 400 and closes. A body holding such a line is refused too: this API takes
// no bodies (guards.go closes any request that has one).
func (c *guardedConn) Read(p []byte) (int, error) {
	if c.skipBody.Load() {
		return 0, errBodyUnread
	}
	if c.refused != nil {
		return 0, c.refused
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		if fold := foldAt(p[:n], c.afterLF); fold >= 0 {
			c.refused = errObsFold
			if fold == 0 {
				return 0, c.refused
			}
			return fold, nil
		}
		c.afterLF = p[n-1] == '\n'
	}
	return n, err
}

// foldAt is the index of the first space or tab that starts a line in b, or -1.
func foldAt(b []byte, afterLF bool) int {
	if afterLF && (b[0] == ' ' || b[0] == '\t') {
		return 0
	}
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 || i+j+1 >= len(b) {
			return -1
		}
		i += j + 1
		if b[i] == ' ' || b[i] == '\t' {
			return i
		}
	}
}

// Close after a skipped body is gunicorn's close_graceful: our FIN, then what the client still
// sends is read and dropped until its FIN or for linger, then the close. Only the first Close
// lingers: another (Server.Close, after a drain that timed out) cuts the linger short.
func (c *guardedConn) Close() error {
	if c.skipBody.Swap(false) {
		c.CloseWrite()
		c.Conn.SetReadDeadline(time.Now().Add(linger))
		io.Copy(io.Discard, c.Conn)
	}
	return c.Conn.Close()
}

// CloseWrite keeps net/http's half-close before it hangs up (closeWriteAndWait), which lets
// its last answer arrive instead of being destroyed by a reset.
func (c *guardedConn) CloseWrite() error {
	if conn, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return conn.CloseWrite()
	}
	return nil
}

// net/http writes its own answers to heads it cannot parse straight to the connection, in one
// write each, as "HTTP/1.1 <status>" + these headers + a short text that runs to the close
// (conn.serve in net/http/server.go). A handler's answer never looks so: its header fields are
// sorted, and Cache-Control comes before Content-Type.
var goErrorHeaders = []byte("\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n")

// Write passes handlers' answers on as they are and rewrites net/http's own error answers:
//   - with Cache-Control: no-store, which every answer carries;
//   - with a Content-Length, so that a client knows it has the whole answer without waiting
//     for the close, which may come as a reset (servers/tests/hostile.py, for one, counts
//     only answers whose end it can see);
//   - 501 (a Transfer-Encoding other than chunked) and 505 (an HTTP version other than 1.x)
//     become 400, as in the Python servers: the contract keeps 5xx for the server's own faults;
//   - its 400 for a head cut short by ReadHeaderTimeout becomes 408, as stdlib-style answers.
//     When the deadline passes in the middle of the request line, bufio.Reader.ReadLine hands
//     net/http the partial line without the timeout error, and the line then fails to parse
//     (past the request line, net/http sees the timeout and hangs up without an answer).
func (c *guardedConn) Write(p []byte) (int, error) {
	answer, ok := rewriteGoError(p, c.headTimedOut())
	if !ok {
		return c.Conn.Write(p)
	}
	if _, err := c.Conn.Write(answer); err != nil {
		return 0, err
	}
	return len(p), nil
}

func rewriteGoError(p []byte, headTimedOut bool) ([]byte, bool) {
	if !bytes.HasPrefix(p, []byte("HTTP/1.1 ")) {
		return nil, false
	}
	end := bytes.Index(p, []byte("\r\n"))
	if end < len("HTTP/1.1 400") || !bytes.HasPrefix(p[end:], goErrorHeaders) {
		return nil, false
	}
	status, body := string(p[len("HTTP/1.1 "):end]), string(p[end+len(goErrorHeaders):])
	switch {
	case headTimedOut && strings.HasPrefix(status, "400 "):
		status, body = "408 Request Timeout", "408 Request Timeout"
	case status[0] == '5':
		detail := strings.ToLower(body)
		if _, after, found := strings.Cut(status, ": "); found {
			detail = after
		}
		status = "400 Bad Request: " + detail
		body = status
	}
	return fmt.Appendf(nil, "HTTP/1.1 %s\r\nCache-Control: no-store\r\nConnection: close\r\nContent-Length: %d\r\n"+
		"Content-Type: text/plain; charset=utf-8\r\n\r\n%s", status, len(body), body), true
}

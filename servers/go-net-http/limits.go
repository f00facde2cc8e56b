package main

import (
	"net/http"
	"time"
)

// What the server promises a client about a request, the limits of stdlib-style, the Python
// server that stands in for this one (servers/stdlib-style/src/stdlib_style/limits.py and
// gunicorn.conf.py); server.yaml's head_timeout_s and drain_timeout_s repeat two of them.
const (
	// A head must be complete this long after its first byte (on a new connection: after the
	// connect). Honest clients send the benchmark's ~100-byte heads in one segment.
	headTimeout = 10 * time.Second
	// nginx answers heads above 4 x 8 KiB with an error; the benchmark's heads are ~100 bytes.
	headLimit = 32 * 1024
	// net/http reads MaxHeaderBytes plus this much "bufio slop" before it answers 431
	// (Server.initialReadLimitSize in net/http/server.go), so MaxHeaderBytes is set this much
	// lower for the limit to be headLimit.
	goHeadSlack = 4096
	// gunicorn's keepalive: k6 VUs reuse their connection, and under overload they wait
	// longer than a short idle limit between requests.
	idleTimeout = 75 * time.Second
	// Kubernetes waits terminationGracePeriodSeconds (30 s) before SIGKILL; in-flight requests
	// get 20 s to finish, leaving room for the preStop pause (gunicorn's graceful_timeout).
	drainTimeout = 20 * time.Second
)

// newServer is net/http's server with those limits. No ReadTimeout or WriteTimeout: they bound
// the whole exchange, and under the seed's 15,000 connections an answer may wait its turn for
// longer than any fixed bound; a client that stops reading costs one goroutine until it goes.
func newServer(addr string, handler http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           handler,
		ReadHeaderTimeout: headTimeout,
		MaxHeaderBytes:    headLimit - goHeadSlack,
		IdleTimeout:       idleTimeout,
		ConnContext:       connContext,
	}
}

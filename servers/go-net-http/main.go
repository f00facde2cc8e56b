// go-net-http: the reference server in the seed benchmark's Go design, net/http with a goroutine
// per connection, doing the same work under the same contract as the Python servers.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	os.Exit(run(os.Getenv, os.Stderr, stop))
}

// run reads the settings, listens, and serves until a signal arrives on stop; it returns the
// exit code.
func run(getenv func(string) string, stderr io.Writer, stop <-chan os.Signal) int {
	settings, err := loadSettings(getenv, func() int {
		return availableCPUs(runtime.NumCPU(), "/sys/fs/cgroup", "/proc/self/cgroup")
	})
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", serverName, err)
		return 1
	}
	runtime.GOMAXPROCS(settings.Workers)
	address := net.JoinHostPort(settings.Host, strconv.Itoa(settings.Port))
	listener, err := net.Listen("tcp", address)
	if err != nil {
		fmt.Fprintf(stderr, "%s: cannot listen on %s (%v): free the port or set PORT or HOST.\n", serverName, address, err)
		return 1
	}
	fmt.Fprintf(stderr, "%s: listening on http://%s (GOMAXPROCS=%d, HASH_ITERATIONS=%d)\n",
		serverName, address, settings.Workers, settings.HashIterations)
	handler := guarded(newHandler(settings.HashIterations, func() int64 { return time.Now().UnixNano() }))
	return serveUntil(stop, newServer(address, handler), guardedListener{listener}, drainTimeout, stderr)
}

// serveUntil serves on listener until a signal arrives on stop, then lets the requests in
// flight finish for up to drain: 0 if they all did, 1 if some were cut off or serving failed.
func serveUntil(stop <-chan os.Signal, server *http.Server, listener net.Listener, drain time.Duration, stderr io.Writer) int {
	served := make(chan error, 1)
	go func() { served <- server.Serve(listener) }()
	select {
	case err := <-served:
		fmt.Fprintf(stderr, "%s: stopped serving: %v\n", serverName, err)
		return 1
	case sig := <-stop:
		// Shutdown closes the listener at once, then each idle connection; one with a request
		// in flight is closed after its answer, which says `Connection: close`.
		ctx, cancel := context.WithTimeout(context.Background(), drain)
		defer cancel()
		if err := server.Shutdown(ctx); err != nil {
			server.Close()
			if errors.Is(err, context.DeadlineExceeded) {
				err = fmt.Errorf("requests still in flight after %v were cut off", drain)
			}
			fmt.Fprintf(stderr, "%s: stopped on %v: %v\n", serverName, sig, err)
			return 1
		}
		fmt.Fprintf(stderr, "%s: stopped on %v, every request in flight answered\n", serverName, sig)
		return 0
	}
}

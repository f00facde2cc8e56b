package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func freePort(t *testing.T) int {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close()
	return listener.Addr().(*net.TCPAddr).Port
}

func waitUntilHealthy(t *testing.T, url string, exited <-chan int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case code := <-exited:
			t.Fatalf("run exited with %d before answering", code)
		default:
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer 200 within 10 s", url)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// run logs one line when it listens and one when it stops, and exits 0 after a clean drain.
func TestRunServesAndStopsOnASignal(t *testing.T) {
	port := freePort(t)
	var stderr lockedBuffer
	stop := make(chan os.Signal, 1)
	exited := make(chan int, 1)
	go func() {
		exited <- run(env(map[string]string{"PORT": strconv.Itoa(port), "WORKERS": "2"}), &stderr, stop)
	}()
	waitUntilHealthy(t, "http://127.0.0.1:"+strconv.Itoa(port)+"/health", exited)
	stop <- syscall.SIGTERM
	select {
	case code := <-exited:
		if code != 0 {
			t.Errorf("exit %d, stderr %q", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return within 30 s of SIGTERM")
	}
	lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "go-net-http: listening on http://127.0.0.1:") ||
		!strings.HasPrefix(lines[1], "go-net-http: stopped on terminated") {
		t.Errorf("stderr %q", stderr.String())
	}
}

func TestRunSaysSoWhenThePortIsTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	var stderr lockedBuffer
	port := strconv.Itoa(taken.Addr().(*net.TCPAddr).Port)
	if code := run(env(map[string]string{"PORT": port}), &stderr, nil); code == 0 || countLines(stderr.String()) != 1 ||
		!strings.HasPrefix(stderr.String(), "go-net-http: cannot listen on 127.0.0.1:"+port) {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
}

// blocking answers once release is closed, after saying on started that a request came.
func blocking(started chan<- struct{}, release <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
		io.WriteString(w, "done")
	})
}

// At the signal the listener closes at once, and a request in flight still gets its answer.
func TestDrainLetsTheRequestInFlightFinish(t *testing.T) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	address := listener.Addr().String()
	started, release := make(chan struct{}, 1), make(chan struct{})
	stop := make(chan os.Signal, 1)
	exited := make(chan int, 1)
	var stderr lockedBuffer
	go func() {
		exited <- serveUntil(stop, newServer(address, blocking(started, release)), listener, time.Minute, &stderr)
	}()
	answered := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + address + "/")
		if err != nil {
			answered <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answered <- strconv.Itoa(resp.StatusCode) + " " + string(body) + " close=" + strconv.FormatBool(resp.Close)
	}()
	<-started
	stop <- syscall.SIGTERM
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		conn, err := net.Dial("tcp", address)
		if err != nil {
			break // refused: nothing is accepted any more
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting 10 s after the signal")
		}
	}
	close(release)
	if got := <-answered; got != "200 done close=true" {
		t.Errorf("the request in flight got %q, want 200 done, with Connection: close", got)
	}
	if code := <-exited; code != 0 {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
}

func TestDrainThatTimesOutExitsNonZero(t *testing.T) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	address := listener.Addr().String()
	started, release := make(chan struct{}, 1), make(chan struct{})
	defer close(release)
	stop := make(chan os.Signal, 1)
	var stderr lockedBuffer
	exited := make(chan int, 1)
	go func() {
		exited <- serveUntil(stop, newServer(address, blocking(started, release)), listener, 100*time.Millisecond, &stderr)
	}()
	go http.Get("http://" + address + "/")
	<-started
	stop <- syscall.SIGTERM
	if code := <-exited; code == 0 || !strings.Contains(stderr.String(), "cut off") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
}

package main

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// The answers' fixed header values, shared slices: net/http only reads them.
var (
	allowed    = []string{"GET, HEAD"}
	noStore    = []string{"no-store"}
	jsonType   = []string{"application/json"}
	textType   = []string{"text/plain; charset=utf-8"}
	healthBody = []byte("OK")
)

type hashAnswer struct {
	Hash      string `json:"hash"`
	Timestamp int64  `json:"timestamp"`
	Source    string `json:"source"`
}

// newHandler answers the contract of README.md's "The API": /hash, /health, 405, 404.
// now is the clock, unix nanoseconds, so that a test can fix it.
func newHandler(rounds int, now func() int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		header := w.Header()
		// Every answer, errors included: a cache must never answer in the server's place.
		header["Cache-Control"] = noStore
		switch r.URL.Path {
		case "/hash":
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				notAllowed(w)
				return
			}
			instant := now()
			body, _ := json.Marshal(hashAnswer{
				Hash:      hashChain(strconv.AppendInt([]byte("input-"), instant, 10), rounds),
				Timestamp: instant / 1_000_000,
				Source:    serverName,
			})
			answer(w, r, jsonType, body)
		case "/health":
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				notAllowed(w)
				return
			}
			answer(w, r, textType, healthBody)
		default:
			plain(w, http.StatusNotFound)
		}
	})
}

// answer writes a 200 with an explicit Content-Length; HEAD gets the same head and no body, so
// it costs what a GET costs (the hash is computed all the same), as in the Python servers.
func answer(w http.ResponseWriter, r *http.Request, contentType []string, body []byte) {
	header := w.Header()
	header["Content-Type"] = contentType
	header["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

func notAllowed(w http.ResponseWriter) {
	w.Header()["Allow"] = allowed
	plain(w, http.StatusMethodNotAllowed)
}

func plain(w http.ResponseWriter, status int) {
	body := http.StatusText(status)
	header := w.Header()
	header["Content-Type"] = textType
	header["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	w.Write([]byte(body))
}

package main

import (
	"net/http"
)

// More header fields than this get 431 and a close: gunicorn's limit_request_fields, one of
// stdlib-style's head limits. net/http has no count of its own: 2,000 fields fit in 32 KiB.
const headFields = 100

var closeConnection = []string{"close"}

// guarded answers what net/http lets through to a handler but stdlib-style refuses, then
// hands the request to next.
func guarded(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A request with a body is answered, its body left unread, and its connection
		// closed. This API takes no bodies, so nothing is lost, and net/http would otherwise:
		// - for Content-Length with Transfer-Encoding: chunked, drop the Content-Length, read
		//   the chunked body, and answer the request hidden after it (request smuggling; RFC
		//   9112 §6.1 says the server MUST close after answering such a request). The handler
		//   cannot tell that case from plain chunked, as the Content-Length is gone by then;
		// - for an announced body that does not come, wait for it, with no deadline, before
		//   writing the answer (it discards up to 256 KiB of a body the handler left unread,
		//   to keep the connection; `Connection: close` skips that), and again after it
		//   (skipBody in connections.go says why).
		if r.ContentLength != 0 {
			w.Header()["Connection"] = closeConnection
			skipBody(r)
		}
		if fields(r) > headFields {
			header := w.Header()
			header["Cache-Control"] = noStore
			header["Connection"] = closeConnection
			plain(w, http.StatusRequestHeaderFieldsTooLarge)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// fields counts the head's header fields as they came, Host included (net/http moves it out
// of the map into r.Host).
func fields(r *http.Request) int {
	n := 0
	if r.Host != "" {
		n++
	}
	for _, values := range r.Header {
		n += len(values)
	}
	return n
}

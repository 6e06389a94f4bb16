package ezthrottle_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
)

// Mount the Transport's live state where you want, like net/http/pprof: a
// browser gets a page that refreshes itself, a program gets JSON.
func ExampleTransport_LiveHandler() {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer api.Close()

	tr, _ := ezthrottle.New()
	mux := http.NewServeMux()
	mux.Handle("GET /debug/ezthrottle", tr.LiveHandler()) // protect it in a real service
	debug := httptest.NewServer(mux)
	defer debug.Close()

	resp, err := (&http.Client{Transport: tr}).Get(api.URL)
	if err != nil {
		panic(err)
	}
	resp.Body.Close()

	resp, err = http.Get(debug.URL + "/debug/ezthrottle?format=json")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	var snap ezthrottle.LiveSnapshot
	_ = json.NewDecoder(resp.Body).Decode(&snap)
	h := snap.Hosts[0]
	fmt.Println("paused:", h.Paused, "by", h.PauseCause.Header, "on a", h.PauseCause.Status)
	fmt.Println("admitted:", h.Admitted)
	// Output:
	// paused: true by Retry-After on a 429
	// admitted: 1
}

package ezlocal_test

import (
	"fmt"
	"net/http"

	"github.com/ezthrottle/ezthrottle-go/ezlocal"
)

// Every engine serves a dashboard at its root URL: open e.URL() in a
// browser while a test is stopped in a debugger to see its jobs, their
// attempts and webhook deliveries, live. The API routes are unchanged.
func Example_dashboard() {
	e, err := ezlocal.Start()
	if err != nil {
		panic(err)
	}
	defer e.Close()

	resp, err := http.Get(e.URL() + "/")
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	// A job's page is at /ui/jobs/{id}; the page's data is JSON under /ui/api/.
	fmt.Println(resp.StatusCode, resp.Header.Get("Content-Type"))
	// Output:
	// 200 text/html; charset=utf-8
}

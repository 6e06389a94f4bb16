package ezlocal_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/ezlocal"
)

// Start an engine on a loopback port, submit a job with the real client and
// read the job's history.
func ExampleStart() {
	e, err := ezlocal.Start()
	if err != nil {
		panic(err)
	}
	defer e.Close()

	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello")
	}))
	defer api.Close()

	c, err := ezclient.New(ezclient.WithAPIKey(e.APIKey()), ezclient.WithProxyURL(e.URL()), ezclient.WithEngineURL(e.URL()))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	sub, err := c.Submit(ctx, &ezclient.Job{URL: api.URL})
	if err != nil {
		panic(err)
	}
	fmt.Println("submitted:", sub.Status)

	info, err := e.WaitJob(ctx, sub.JobID)
	if err != nil {
		panic(err)
	}
	fmt.Println("result:", info.Status, info.Result.StatusCode, info.Result.Body)
	for _, ev := range info.Events {
		fmt.Println(strings.TrimSpace(string(ev.Type) + " " + ev.Region))
	}
	// Output:
	// submitted: queued
	// result: completed 200 hello
	// queued
	// dispatched iad
	// attempt iad
	// completed iad
}

// Mount the engine's handler in a server of your own.
func ExampleEngine_Handler() {
	e, err := ezlocal.New(ezlocal.WithAPIKey("my_dev_key", "cus_me"))
	if err != nil {
		panic(err)
	}
	defer e.Close()
	srv := httptest.NewServer(e.Handler())
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/health")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	fmt.Println(resp.StatusCode, e.APIKey())
	// Output: 200 my_dev_key
}

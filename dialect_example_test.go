package ezthrottle_test

import (
	"context"
	"fmt"
	"log"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/ezclient"
)

// Decorate a client (here: log every forward) without hiding what its
// engine accepts: the Transport still knows it submits to a self-hosted
// engine, so forwarded jobs carry their trace context in headers only.
func ExampleDecorateSubmitter() {
	client, err := ezclient.New(ezclient.WithSelfHosted("http://127.0.0.1:8080", "user-1"))
	if err != nil {
		log.Fatal(err)
	}
	logged := ezthrottle.DecorateSubmitter(client, func(ctx context.Context, job *ezclient.Job, next ezthrottle.Submitter) (*ezclient.Submission, error) {
		sub, err := next.Submit(ctx, job)
		log.Printf("forward %s %s: %v", job.Method, job.URL, err)
		return sub, err
	})
	tr, err := ezthrottle.New(ezthrottle.WithForwarding(logged, ezthrottle.JobWebhook("https://app.example.com/hook")))
	if err != nil {
		log.Fatal(err)
	}
	_ = tr
	fmt.Println(ezthrottle.SubmitterDialect(logged))
	// Output: self-hosted
}

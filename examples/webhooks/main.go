// Webhooks: receive EZThrottle results safely and wait for them.
//
//	go run ./examples/webhooks
//
// A webhook.Handler is mounted on an ordinary http.ServeMux (see
// internal/demo: mux.Handle("POST /webhooks/ezthrottle", handler)). It
// verifies every delivery's X-EZThrottle-Signature, de-duplicates
// redeliveries by job ID, and lets the code that submitted a job wait for its
// result by job ID or idempotent key. This example submits three jobs, then:
//
//   - watches results arrive through a subscription,
//   - waits for each one (by job ID, and by a custom idempotent key),
//   - shows what the receiver does with a forged, an unsigned and a
//     repeated delivery.
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ezthrottle/ezthrottle-go/examples/internal/demo"
	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/ezclient/webhook"
)

func main() {
	env, err := demo.Start()
	if err != nil {
		demo.Fatal(err)
	}
	defer env.Close()
	// A simulated API that takes a little while per order.
	env.Mux.HandleFunc("POST /orders/{id}/ship", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(50 * time.Millisecond)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"order":%q,"shipped":true}`, r.PathValue("id"))
	})

	fmt.Println("EZThrottle webhooks")
	fmt.Println("  " + env.Describe())
	fmt.Printf("  receiver: %s (signatures verified: %v)\n\n", env.HookURL, env.Verifying)
	ctx := context.Background()

	// Print every result as it arrives, whoever waits for it.
	subCtx, stopWatching := context.WithCancel(ctx)
	results, unsubscribe := env.Hooks.Subscribe(subCtx)
	var watcher sync.WaitGroup
	watcher.Add(1)
	go func() {
		defer watcher.Done()
		for r := range results {
			env.Printf("  ← delivery: job %s %s (HTTP %d) %s", r.JobID, r.Status, r.StatusCode, r.Body)
		}
	}()

	fmt.Println("1. Submit three jobs whose results go to the receiver:")
	var keys []webhook.Key
	for _, id := range []string{"A-1", "A-2", "A-3"} {
		res, err := env.Client.Step().
			URL(env.BaseURL + "/orders/" + id + "/ship").
			Method("POST").
			IdempotentKey("ship-" + id).
			Webhook(ezclient.Webhook{URL: env.HookURL}).
			Metadata(map[string]any{"order": id}).
			Execute(ctx)
		if err != nil {
			demo.Fatal(err)
		}
		keys = append(keys, webhook.KeyOf(res.Submission))
		env.Printf("submitted order %s as job %s (key %s)", id, res.JobID(), res.Submission.IdempotentKey)
	}

	fmt.Println()
	fmt.Println("2. Wait for all of them (a result that arrived before the wait is returned at once):")
	for _, k := range keys {
		r, err := env.Wait(ctx, k)
		if err != nil {
			demo.Fatal(err)
		}
		env.Printf("result for %s: succeeded=%v, metadata order=%v", k, r.Succeeded, r.Metadata["order"])
	}
	r, err := env.Hooks.WaitKey(ctx, "ship-A-2")
	if err != nil {
		demo.Fatal(err)
	}
	env.Printf("and by idempotent key alone: ship-A-2 → job %s", r.JobID)

	fmt.Println()
	fmt.Println("3. What the receiver refuses:")
	payload := fmt.Sprintf(`{"job_id":%q,"idempotent_key":"ship-A-1","status":"success","response":{"status_code":200,"body":"forged"},"metadata":{}}`, keys[0].JobID)
	post := func(what, signature, body string) {
		req, _ := http.NewRequest(http.MethodPost, env.HookURL, strings.NewReader(body))
		if signature != "" {
			req.Header.Set(webhook.SignatureHeader, signature)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			demo.Fatal(err)
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		env.Printf("%-48s → %d %s", what, resp.StatusCode, strings.TrimSpace(string(answer)))
	}
	if env.Verifying {
		post("a delivery signed with another secret", webhook.Sign("whsec_not_the_account_secret", time.Now(), []byte(payload)), payload)
		post("an unsigned delivery", "", payload)
		post("a correctly signed but stale delivery (1 h old)", webhook.Sign(demo.Secret, time.Now().Add(-time.Hour), []byte(payload)), payload)
		post("a redelivery of a job already received", webhook.Sign(demo.Secret, time.Now(), []byte(payload)), payload)
	} else {
		post("a redelivery of a job already received", "", payload)
	}
	notPayload, sig := `{"hello":"world"}`, ""
	if env.Verifying {
		sig = webhook.Sign(demo.Secret, time.Now(), []byte(notPayload))
	}
	post("a signed body that is not a payload", sig, notPayload)
	http.DefaultClient.CloseIdleConnections()
	fmt.Println("   Only the three real results were handed to the code above; duplicates are acknowledged")
	fmt.Println("   (so the engine stops redelivering) but not passed on again.")

	stopWatching()
	unsubscribe()
	watcher.Wait()
	fmt.Printf("\nThe receiver holds %d results (kept for %v, at most %d).\n", env.Hooks.Store().Len(), webhook.DefaultTTL, webhook.DefaultMaxResults)
}

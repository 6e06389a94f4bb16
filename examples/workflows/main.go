// Workflows: the product README's Step workflows, run for real.
//
//	go run ./examples/workflows
//
// Each section builds the workflow of the README with the Step builder,
// executes it, and shows where every request ran: "here" (this process, a
// FRUGAL step's local attempt) or "engine/<region>" (EZThrottle). Offline,
// the simulated APIs log every call they receive and the embedded engine's
// job tree (children spawned by on_success / on_failure) is printed.
package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/ezthrottle/ezthrottle-go/examples/internal/demo"
	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/ezlocal"
)

func main() {
	env, err := demo.Start(ezlocal.WithDefaultPace(20, 4))
	if err != nil {
		demo.Fatal(err)
	}
	defer env.Close()
	w := &world{env: env}
	// The simulated APIs: status when called from here, from the engine.
	w.route("/api", 200, 200)
	w.route("/primary-api", 500, 500)
	w.route("/backup-api", 200, 200)
	w.route("/notify", 200, 200)
	w.route("/analytics/track", 200, 200)
	w.route("/openai/v1/chat/completions", 429, 200) // rate limited here, fine later
	w.route("/sendgrid/send", 202, 202)
	w.route("/stripe/v1/charges", 200, 200)
	w.route("/cheap-api", 500, 500)
	w.route("/critical-webhook", 200, 200)
	w.route("/slack/webhook", 200, 200)

	fmt.Println("EZThrottle workflows")
	fmt.Println("  " + env.Describe())
	c := env.Client
	hook := ezclient.Webhook{URL: env.HookURL}

	w.section("Workflow chaining: FRUGAL call → PERFORMANCE notification → FRUGAL analytics",
		func() *ezclient.Step {
			analytics := c.Step().URL(w.url("/analytics/track")).Type(ezclient.StepFrugal)
			notification := c.Step().URL(w.url("/notify")).Type(ezclient.StepPerformance).
				Webhook(hook).Regions(ezclient.RegionIAD, ezclient.RegionLAX).
				OnSuccess(analytics)
			return c.Step().URL(w.url("/api")).Type(ezclient.StepFrugal).
				FallbackOnError(429, 500).
				OnSuccess(notification)
		})

	w.section("Fallback chain: the primary answers 500, the engine falls back to the backup",
		func() *ezclient.Step {
			backup := new(ezclient.Step).URL(w.url("/backup-api"))
			return c.Step().URL(w.url("/primary-api")).
				Fallback(backup, ezclient.OnError(500, 502, 503)).
				Webhook(hook)
		})

	w.section("Mixed 1, FRUGAL → PERFORMANCE: rate limited here, so the call and its notification go to the engine",
		func() *ezclient.Step {
			return c.Step().URL(w.url("/openai/v1/chat/completions")).Method("POST").
				Type(ezclient.StepFrugal).FallbackOnError(429, 500).
				OnSuccess(c.Step().URL(w.url("/sendgrid/send")).Method("POST").
					Type(ezclient.StepPerformance).Webhook(hook).
					Regions(ezclient.RegionIAD, ezclient.RegionLAX, ezclient.RegionORD))
		})

	w.section("Mixed 2, PERFORMANCE → FRUGAL: a racing payment, then analytics (inside a job, every step runs on the engine)",
		func() *ezclient.Step {
			return c.Step().URL(w.url("/stripe/v1/charges")).Method("POST").
				Type(ezclient.StepPerformance).Webhook(hook).
				Regions(ezclient.RegionIAD, ezclient.RegionLAX).
				OnSuccess(c.Step().URL(w.url("/analytics/track")).Type(ezclient.StepFrugal))
		})

	w.section("Mixed 3, complex: FRUGAL with a local fallback, PERFORMANCE notification, FRUGAL analytics, Slack on failure",
		func() *ezclient.Step {
			return c.Step().URL(w.url("/cheap-api")).Type(ezclient.StepFrugal).
				FallbackOnError(429, 500).
				Fallback(new(ezclient.Step).URL(w.url("/backup-api")), ezclient.OnError(500)). // still FRUGAL
				OnSuccess(c.Step().URL(w.url("/critical-webhook")).Type(ezclient.StepPerformance).
					Webhook(hook).Regions(ezclient.RegionIAD, ezclient.RegionLAX, ezclient.RegionORD).
					OnSuccess(c.Step().URL(w.url("/analytics/track")).Type(ezclient.StepFrugal))).
				OnFailure(c.Step().URL(w.url("/slack/webhook")).Type(ezclient.StepFrugal))
		})

	fmt.Println()
	fmt.Println("Only the requests that needed EZThrottle went to it; every other step ran here for free.")
}

// world hosts the simulated APIs and prints what happens.
type world struct {
	env *demo.Env
}

// route serves path with status local when called from this process and
// status remote when called by the engine (which names its region).
func (w *world) route(path string, local, remote int) {
	w.env.Mux.HandleFunc(path, func(rw http.ResponseWriter, r *http.Request) {
		from, status := "here", local
		if region := r.Header.Get("X-EZThrottle-Region"); region != "" {
			from, status = "engine/"+region, remote
		}
		w.env.Printf("    %-6s %-28s called from %-11s → %d", r.Method, path, from, status)
		rw.WriteHeader(status)
		fmt.Fprintf(rw, `{"path":%q}`, path)
	})
}

func (w *world) url(path string) string { return w.env.BaseURL + path }

// section executes the workflow, prints the step results and, offline, the
// engine's job tree.
func (w *world) section(title string, build func() *ezclient.Step) {
	fmt.Printf("\n== %s\n", title)
	ctx := context.Background()
	res, err := build().Execute(ctx)
	if err != nil {
		demo.Fatal(err)
	}
	fmt.Println("  step results:")
	var jobs []string
	printResult(res, "    ", &jobs)
	for _, id := range jobs {
		w.printJobTree(ctx, id)
	}
}

// printResult prints what Execute did, depth first, collecting submitted
// job IDs.
func printResult(r *ezclient.StepResult, indent string, jobs *[]string) {
	if r == nil {
		return
	}
	line := fmt.Sprintf("%s%s %s: %s", indent, r.Method, pathOf(r.URL), r.Outcome)
	if r.Local {
		line += fmt.Sprintf(" (ran here: %d)", r.StatusCode)
		if r.Outcome == ezclient.OutcomeSucceeded && r.SuccessfulAttempt() != r {
			line += ", rescued by its fallback"
		}
	}
	if id := r.JobID(); id != "" {
		line += fmt.Sprintf(" → job %s (%s)", id, r.Submission.Status)
		*jobs = append(*jobs, id)
	}
	fmt.Println(line)
	for _, fb := range r.Fallbacks {
		printResult(fb, indent+"fallback: ", jobs)
	}
	printResult(r.OnSuccess, indent+"on_success: ", jobs)
	printResult(r.OnFailure, indent+"on_failure: ", jobs)
}

// printJobTree waits until the engine settled the job and prints it with its
// children (offline only: the Cloud has no such introspection).
func (w *world) printJobTree(ctx context.Context, id string) {
	if w.env.Engine == nil {
		fmt.Printf("  job %s submitted to EZThrottle Cloud; its result goes to the webhook\n", id)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, w.env.WaitTimeout())
	defer cancel()
	var walk func(id, indent, role string)
	walk = func(id, indent, role string) {
		info, err := w.env.Engine.WaitJob(ctx, id)
		if err != nil {
			demo.Fatal(fmt.Errorf("job %s: %w", id, err))
		}
		where := ""
		if info.Result != nil {
			where = fmt.Sprintf(" in %s, last request %s → %d", info.Result.Region, pathOf(info.Result.URL), info.Result.StatusCode)
		}
		var extra []string
		if n := len(info.EventsOf(ezlocal.EventFallbackTriggered)); n > 0 {
			extra = append(extra, fmt.Sprintf("%d fallback(s) triggered", n))
		}
		if ev := info.EventsOf(ezlocal.EventRaceWon); len(ev) > 0 {
			extra = append(extra, "race won by "+ev[0].Region)
		}
		if n := len(info.EventsOf(ezlocal.EventWebhookDelivered)); n > 0 {
			extra = append(extra, fmt.Sprintf("%d webhook(s) delivered", n))
		}
		suffix := ""
		if len(extra) > 0 {
			suffix = " [" + strings.Join(extra, ", ") + "]"
		}
		fmt.Printf("%s%sjob %s %s%s%s\n", indent, role, info.ID, info.Status, where, suffix)
		for _, child := range info.Children {
			c, _ := w.env.Engine.Job(child)
			walk(child, indent+"  ", c.Role+": ")
		}
	}
	fmt.Println("  on the engine:")
	walk(id, "    ", "")
}

func pathOf(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		if j := strings.Index(u[i+3:], "/"); j >= 0 {
			return u[i+3+j:]
		}
	}
	return u
}

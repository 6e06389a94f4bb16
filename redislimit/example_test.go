package redislimit_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
	"github.com/ezthrottle/ezthrottle-go/redislimit"
)

// Every pod of a service builds its HTTP client like this: the limit on
// api.example.com (20 requests per second, bursts of 5, 10 in flight) then
// holds for all of them together.
func Example() {
	rdb := redis.NewClient(&redis.Options{
		Addr: "redis:6379",
		// Short timeouts: they bound how long a Redis outage delays a
		// request before the local fallback takes over.
		DialTimeout:  200 * time.Millisecond,
		ReadTimeout:  200 * time.Millisecond,
		WriteTimeout: 200 * time.Millisecond,
	})
	defer rdb.Close()

	limiter, err := redislimit.New(rdb, redislimit.WithPrefix("billing:"))
	if err != nil {
		log.Fatal(err)
	}
	defer limiter.Close()

	client, err := ezthrottle.Wrap(nil,
		ezthrottle.WithLimiter(limiter),
		ezthrottle.WithHostLimit("api.example.com", ezthrottle.Limit{Rate: 20, Burst: 5, MaxInFlight: 10}),
	)
	if err != nil {
		log.Fatal(err)
	}
	resp, err := client.Get("https://api.example.com/v1/invoices")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)

	s := limiter.Stats()
	fmt.Println("redis available:", s.Available, "outages:", s.Outages)
}

// With the default fail-open mode a request never fails because Redis is
// down: the local limiter takes over, and the outage is counted.
func ExampleWithFailOpen() {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1}) // nothing listens there
	defer rdb.Close()
	limiter, err := redislimit.New(rdb, redislimit.WithFailOpen(nil))
	if err != nil {
		log.Fatal(err)
	}
	defer limiter.Close()

	permit, err := limiter.Acquire(context.Background(), ezthrottle.Admission{
		Key:   "https://api.example.com:443",
		Limit: ezthrottle.DefaultLimit(),
	})
	fmt.Println("admitted:", err == nil)
	permit.Release()
	s := limiter.Stats()
	fmt.Println("available:", s.Available, "outages:", s.Outages, "served locally:", s.FallbackAcquires)
	// Output:
	// admitted: true
	// available: false outages: 1 served locally: 1
}

// With WithFailClosed no request starts without Redis's consent.
func ExampleWithFailClosed() {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1}) // nothing listens there
	defer rdb.Close()
	limiter, err := redislimit.New(rdb, redislimit.WithFailClosed())
	if err != nil {
		log.Fatal(err)
	}
	defer limiter.Close()

	client, err := ezthrottle.Wrap(nil, ezthrottle.WithLimiter(limiter))
	if err != nil {
		log.Fatal(err)
	}
	_, err = client.Get("https://api.example.com/v1/invoices")
	fmt.Println(errors.Is(err, redislimit.ErrUnavailable))
	// Output:
	// true
}

// Stats feeds health checks and metrics.
func ExampleLimiter_Stats() {
	rdb := redis.NewClient(&redis.Options{Addr: "redis:6379"})
	defer rdb.Close()
	limiter, err := redislimit.New(rdb)
	if err != nil {
		log.Fatal(err)
	}
	defer limiter.Close()

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		s := limiter.Stats()
		fmt.Fprintf(w, "redis_available=%t outages=%d errors=%d fallback_acquires=%d leases_held=%d\n",
			s.Available, s.Outages, s.Errors, s.FallbackAcquires, s.LeasesHeld)
	})
}

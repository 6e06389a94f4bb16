// Command ezthrottle is the EZThrottle developer tool.
//
//	ezthrottle dev      run a local EZThrottle engine (both dialects) on localhost
//	ezthrottle listen   run a local webhook receiver that verifies and prints deliveries
//	ezthrottle submit   submit a job from flags or JSON and print the submission
//
// Run "ezthrottle <command> --help" for the flags of a command. Usage errors
// exit with status 2, runtime errors with status 1 and a message on stderr.
// The API key is read from EZTHROTTLE_API_KEY and never printed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/ezthrottle/ezthrottle-go/ezclient"
	"github.com/ezthrottle/ezthrottle-go/internal/redact"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first signal cancels ctx and starts a graceful shutdown; restoring
	// the default handling then lets a second Ctrl-C end the process at once.
	context.AfterFunc(ctx, stop)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole program: it parses args, runs the command until it ends or
// ctx is cancelled (SIGINT/SIGTERM in main), and returns the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: &syncWriter{w: stdout}, stderr: &syncWriter{w: stderr}, getenv: os.Getenv}
	return a.run(ctx, args)
}

// app carries the program's I/O and environment, so tests run it in-process.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(a *app, ctx context.Context, args []string) error
}

var commands = []command{
	{"dev", "run a local EZThrottle engine on localhost", (*app).dev},
	{"listen", "run a local webhook receiver that verifies and prints deliveries", (*app).listen},
	{"submit", "submit a job from flags or JSON and print the submission", (*app).submit},
}

const topUsage = `ezthrottle — the EZThrottle developer tool

Usage:
  ezthrottle <command> [flags]

Commands:
%s
  help [command]   show help for a command

Environment:
  EZTHROTTLE_API_KEY     API key for EZThrottle Cloud (never printed)
  EZTHROTTLE_PROXY_URL   Cloud proxy base URL (default %s)
  EZTHROTTLE_URL         engine base URL (default %s)
  EZTHROTTLE_USER_ID     user_id for self-hosted engines
  EZTHROTTLE_WEBHOOK_SECRET  webhook signing secret (dev signs Cloud-dialect deliveries with it,
                         listen verifies them; self-hosted deliveries are never signed)

Quick start, fully offline:
  ezthrottle dev                      # terminal 1: prints the variables to export
  ezthrottle listen --addr 127.0.0.1:9090   # terminal 2
  ezthrottle submit --url https://example.com --webhook http://127.0.0.1:9090/   # terminal 3

Run "ezthrottle <command> --help" for a command's flags.
`

func (a *app) printTopUsage(w io.Writer) {
	var b strings.Builder
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-16s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, topUsage, strings.TrimRight(b.String(), "\n"), ezclient.DefaultProxyURL, ezclient.DefaultEngineURL)
}

func (a *app) run(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprintf(a.stderr, "ezthrottle: no command given (%s)\nRun 'ezthrottle --help' for usage.\n", commandNames())
		return 2
	}
	name, rest := args[0], args[1:]
	switch name {
	case "-h", "-help", "--help":
		a.printTopUsage(a.stdout)
		return 0
	case "help":
		if len(rest) == 0 {
			a.printTopUsage(a.stdout)
			return 0
		}
		name, rest = rest[0], []string{"--help"}
	}
	for _, c := range commands {
		if c.name != name {
			continue
		}
		err := c.run(a, ctx, rest)
		var ue *usageError
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.As(err, &ue):
			fmt.Fprintf(a.stderr, "ezthrottle %s: %s\nRun 'ezthrottle %s --help' for usage.\n", c.name, redact.Text(ue.msg), c.name)
			return 2
		default:
			// Errors are redacted where they are made; this is the last
			// line of defence for what a user-supplied value may carry.
			fmt.Fprintf(a.stderr, "ezthrottle %s: error: %s\n", c.name, redact.Text(err.Error()))
			return 1
		}
	}
	fmt.Fprintf(a.stderr, "ezthrottle: unknown command %q\nRun 'ezthrottle --help' for usage.\n", name)
	return 2
}

// commandNames lists the commands, for short usage messages.
func commandNames() string {
	names := make([]string, len(commands))
	for i, c := range commands {
		names[i] = c.name
	}
	return strings.Join(names, ", ")
}

// usageError is a mistake in the command line (exit status 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// newFlagSet returns a flag set that reports errors instead of printing or
// exiting; its Usage prints the help to stdout, and parse calls it once, on
// --help only.
func (a *app) newFlagSet(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		out := a.stdout
		fmt.Fprintf(out, "%s\n\nFlags:\n", strings.TrimSpace(synopsis))
		fs.SetOutput(out)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return fs
}

// parse parses args, printing the help once on --help (returning
// flag.ErrHelp) and turning flag errors and stray arguments into usage
// errors, which run reports as a short message on stderr. The flag package
// calls Usage itself on both; it is silenced during the parse.
func parse(fs *flag.FlagSet, args []string) error {
	usage := fs.Usage
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.Usage = usage
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage()
			return err
		}
		return &usageError{msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q (flags only)", fs.Arg(0))
	}
	return nil
}

// envOr returns the environment variable's value, or def when it is empty.
func (a *app) envOr(name, def string) string {
	if v := strings.TrimSpace(a.getenv(name)); v != "" {
		return v
	}
	return def
}

// listFlag is a repeatable string flag; each value may also be a
// comma-separated list when split is true.
type listFlag struct {
	vals  []string
	split bool
}

func (l *listFlag) String() string { return strings.Join(l.vals, ",") }

func (l *listFlag) Set(v string) error {
	if !l.split {
		l.vals = append(l.vals, v)
		return nil
	}
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			l.vals = append(l.vals, p)
		}
	}
	return nil
}

// syncWriter serialises writes from concurrent goroutines (the receiver's
// request handlers and its printer).
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

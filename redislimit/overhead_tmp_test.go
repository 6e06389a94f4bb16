package redislimit

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	ezthrottle "github.com/ezthrottle/ezthrottle-go"
)

type cannedScripter struct {
	redis.Scripter
	reply []any
}

func (c cannedScripter) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	cmd := redis.NewCmd(ctx)
	cmd.SetVal(c.reply)
	return cmd
}

func BenchmarkClientOverhead(b *testing.B) {
	for _, c := range []struct {
		name  string
		lim   ezthrottle.Limit
		reply []any
	}{
		{"nocap", ezthrottle.Limit{Rate: 1e6, Burst: 1e6}, []any{int64(1), int64(0), int64(0), int64(1), int64(0), int64(0)}},
		{"cap", ezthrottle.Limit{Rate: 1e6, Burst: 1e6, MaxInFlight: 1e6}, []any{int64(1), int64(0), int64(0), int64(1), int64(1000000), int64(0)}},
	} {
		b.Run(c.name, func(b *testing.B) {
			l, _ := New(cannedScripter{reply: c.reply}, WithFailClosed())
			defer l.Close()
			ctx := context.Background()
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				p, err := l.Acquire(ctx, ezthrottle.Admission{Key: host, Limit: c.lim})
				if err != nil {
					b.Fatal(err)
				}
				p.Release()
			}
		})
	}
}

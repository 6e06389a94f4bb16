package ezthrottle_test

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	require.NoError(t, err)
	return string(b)
}

// TestREADMEFacts keeps the README's facts in step with the repository
// (issue 13 item 13): the Go version of go.mod, what the race detector
// needs, every example in the examples table, one Redis port everywhere,
// and ForwardOrFallback shown as the method it is.
func TestREADMEFacts(t *testing.T) {
	readme := readFile(t, "README.md")

	t.Run("Go version", func(t *testing.T) {
		m := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(readFile(t, "go.mod"))
		require.NotNil(t, m)
		assert.Contains(t, readme, "Go "+m[1]+" or newer")
		for _, v := range regexp.MustCompile(`Go (1\.\d+(?:\.\d+)?) or newer`).FindAllStringSubmatch(readme, -1) {
			assert.Equal(t, m[1], v[1], "every Go version the README names is go.mod's")
		}
	})

	t.Run("race detector needs cgo and a C compiler", func(t *testing.T) {
		assert.Contains(t, readme, "go test -race")
		assert.Contains(t, readme, "cgo")
		assert.Contains(t, readme, "apt-get install gcc")
	})

	t.Run("every example in the table", func(t *testing.T) {
		mains, err := filepath.Glob("examples/*/main.go")
		require.NoError(t, err)
		sdks, err := filepath.Glob("examples/sdks/*/main.go")
		require.NoError(t, err)
		require.NotEmpty(t, mains)
		for _, m := range mains {
			dir := filepath.Base(filepath.Dir(m))
			assert.Contains(t, readme, "| `go run ./examples/"+dir+"` |", "examples table row for %s", dir)
		}
		for _, m := range sdks {
			dir := filepath.Base(filepath.Dir(m))
			assert.Contains(t, readme, "| `cd examples/sdks && go run ./"+dir+"` |", "examples table row for sdks/%s", dir)
		}
	})

	t.Run("one Redis port", func(t *testing.T) {
		files := []string{"README.md", "examples/README.md", ".ci/run", ".ci/services.d/redis.sh"}
		for _, pat := range []string{"examples/redis/*.go", "redislimit/*.go"} {
			m, err := filepath.Glob(pat)
			require.NoError(t, err)
			files = append(files, m...)
		}
		ports := map[string][]string{}
		rx := regexp.MustCompile(`(?:127\.0\.0\.1:|localhost:|redis:|--port |PORT:-)(\d{4,5})\b`)
		for _, f := range files {
			for _, m := range rx.FindAllStringSubmatch(readFile(t, f), -1) {
				if strings.HasPrefix(m[1], "63") {
					ports[m[1]] = append(ports[m[1]], f)
				}
			}
		}
		keys := make([]string, 0, len(ports))
		for k := range ports {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		assert.Equal(t, []string{"6379"}, keys, "Redis ports named: %v", ports)
	})

	t.Run("ForwardOrFallback is a method", func(t *testing.T) {
		idx := regexp.MustCompile(`ForwardOrFallback\(`).FindAllStringIndex(readme, -1)
		require.NotEmpty(t, idx)
		for _, i := range idx {
			before := strings.TrimRight(readme[:i[0]], " \t\n")
			assert.True(t, strings.HasSuffix(before, "."), "ForwardOrFallback( must be called on a step: %q", readme[max(0, i[0]-40):i[1]])
		}
	})
}

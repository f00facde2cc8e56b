package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The name in every answer's "source" and in every line the server writes.
const serverName = "go-net-http"

// Settings is everything the server reads from its environment, read once at start, here and
// nowhere else. The names, defaults, bounds and refusals are those of the Python servers'
// src/*/settings.py, so one harness drives all of them the same way.
type Settings struct {
	Host           string
	Port           int
	Workers        int // GOMAXPROCS: the Go runtime's counterpart of the Python runners' workers
	HashIterations int
}

// A settingsError is one variable holding a value the server cannot use; its text is the one
// line the server prints before it exits.
type settingsError struct{ text string }

func (e *settingsError) Error() string { return e.text }

// loadSettings reads the settings through getenv. cpus is called only when WORKERS is left
// empty: reading the cgroup files is the default's business, not every start's.
func loadSettings(getenv func(string) string, cpus func() int) (Settings, error) {
	var s Settings
	var err error
	s.Host = getenv("HOST")
	if s.Host == "" {
		s.Host = "127.0.0.1"
	}
	if s.Port, err = integer(getenv, "PORT", 8080, 1, 65535); err != nil {
		return Settings{}, err
	}
	if s.Workers, err = integer(getenv, "WORKERS", 0, 1, 1024); err != nil {
		return Settings{}, err
	}
	if s.Workers == 0 {
		s.Workers = cpus()
	}
	if s.HashIterations, err = integer(getenv, "HASH_ITERATIONS", 100, 1, 10_000_000); err != nil {
		return Settings{}, err
	}
	return s, nil
}

// integer reads a whole number from low to high; an empty value (spaces included) means the default.
func integer(getenv func(string) string, name string, fallback, low, high int) (int, error) {
	raw := strings.TrimSpace(getenv(name))
	if raw == "" {
		return fallback, nil
	}
	value, err := strconv.Atoi(raw)
	if err != nil || value < low || value > high {
		return 0, &settingsError{fmt.Sprintf("%s must be a whole number from %d to %d, got %s.", name, low, high, pyRepr(raw))}
	}
	return value, nil
}

// pyRepr quotes s as Python's repr() does, so a refusal reads the same as the Python servers'
// (`got '99999'`), quotes included.
func pyRepr(s string) string {
	quote := byte('\'')
	if strings.ContainsRune(s, '\'') && !strings.ContainsRune(s, '"') {
		quote = '"'
	}
	var b strings.Builder
	b.WriteByte(quote)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\udc%02x`, s[i]) // Python decodes undecodable environment bytes as surrogates
		case r == '\\' || r == rune(quote):
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case unicode.IsPrint(r):
			b.WriteRune(r)
		case r <= 0xff:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
		i += size
	}
	b.WriteByte(quote)
	return b.String()
}

// availableCPUs is the CPUs this process can really use: affinity (the size of its CPU affinity
// mask, which is what runtime.NumCPU counts), capped by a cgroup CPU quota rounded up. Go 1.19's
// runtime ignores quotas, so a container limited to 2 CPUs on a 64-core node would otherwise run
// 64 Ps and be throttled. A port of available_cpus in servers/async-style/src/async_style/settings.py.
func availableCPUs(affinity int, cgroupRoot, procCgroup string) int {
	cpus := affinity
	if quota, ok := cgroupCPUQuota(cgroupRoot, procCgroup); ok {
		if limit := int(math.Max(1, math.Ceil(quota))); limit < cpus {
			cpus = limit
		}
	}
	return cpus
}

// cgroupCPUQuota is the tightest CPU quota (in CPUs) on this process's cgroup and its
// ancestors; ok is false when none is set.
func cgroupCPUQuota(root, procCgroup string) (quota float64, ok bool) {
	for _, dir := range cgroupDirs(root, procCgroup) {
		if q, found := readQuota(dir); found && (!ok || q < quota) {
			quota, ok = q, true
		}
	}
	return quota, ok
}

type cgroupMount struct{ root, path string }

// cgroupDirs lists the directories that may hold CPU controller files, from the process's own
// cgroup up to each hierarchy's mount.
func cgroupDirs(root, procCgroup string) []string {
	var mounts []cgroupMount
	if text, err := os.ReadFile(procCgroup); err == nil {
		for _, line := range strings.Split(strings.TrimRight(string(text), "\n"), "\n") {
			fields := strings.SplitN(line, ":", 3)
			if len(fields) != 3 {
				continue
			}
			controllers, path := fields[1], fields[2]
			if controllers == "" { // cgroup v2, the unified hierarchy
				mounts = append(mounts, cgroupMount{root, path})
				continue
			}
			if !contains(strings.Split(controllers, ","), "cpu") { // cgroup v1: only the cpu controller's
				continue
			}
			for _, name := range []string{"cpu,cpuacct", "cpu", "cpuacct,cpu"} {
				if info, err := os.Stat(filepath.Join(root, name)); err == nil && info.IsDir() {
					mounts = append(mounts, cgroupMount{filepath.Join(root, name), path})
					break
				}
			}
		}
	}
	if len(mounts) == 0 {
		mounts = []cgroupMount{{root, "/"}, {filepath.Join(root, "cpu,cpuacct"), "/"}, {filepath.Join(root, "cpu"), "/"}}
	}
	var dirs []string
	for _, m := range mounts {
		mount := filepath.Clean(m.root)
		// Inside a container the path from /proc may not exist under the namespaced mount;
		// walking up to the mount's root finds the container's own limits there.
		current := filepath.Join(mount, strings.TrimLeft(m.path, "/"))
		for {
			dirs = append(dirs, current)
			if current == mount || !strings.HasPrefix(current, strings.TrimSuffix(mount, "/")+"/") {
				break
			}
			current = filepath.Dir(current)
		}
		if !contains(dirs, mount) {
			dirs = append(dirs, mount)
		}
	}
	return dirs
}

// readQuota reads one directory's quota: cgroup v2's cpu.max ("<quota|max> <period>"), else
// v1's cpu.cfs_quota_us over cpu.cfs_period_us (a quota of -1 means none).
func readQuota(dir string) (float64, bool) {
	if text, err := os.ReadFile(filepath.Join(dir, "cpu.max")); err == nil {
		fields := strings.Fields(string(text))
		if len(fields) == 0 || fields[0] == "max" {
			return 0, false
		}
		if len(fields) >= 2 {
			quota, errQuota := strconv.ParseInt(fields[0], 10, 64)
			period, errPeriod := strconv.ParseInt(fields[1], 10, 64)
			if errQuota == nil && errPeriod == nil && period != 0 {
				return float64(quota) / float64(period), true
			}
		}
		// An unreadable cpu.max falls through to the v1 files, as in settings.py.
	}
	quota, errQuota := readInt(filepath.Join(dir, "cpu.cfs_quota_us"))
	period, errPeriod := readInt(filepath.Join(dir, "cpu.cfs_period_us"))
	if errQuota != nil || errPeriod != nil || quota <= 0 || period <= 0 {
		return 0, false
	}
	return float64(quota) / float64(period), true
}

func readInt(path string) (int64, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(text)), 10, 64)
}

func contains(list []string, s string) bool {
	for _, item := range list {
		if item == s {
			return true
		}
	}
	return false
}

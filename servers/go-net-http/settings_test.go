package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func env(values map[string]string) func(string) string {
	return func(name string) string { return values[name] }
}

func noCPUs() int { panic("the CPU count was read although WORKERS was set") }

func TestDefaults(t *testing.T) {
	s, err := loadSettings(env(nil), func() int { return 3 })
	if err != nil {
		t.Fatal(err)
	}
	if want := (Settings{Host: "127.0.0.1", Port: 8080, Workers: 3, HashIterations: 100}); s != want {
		t.Errorf("%+v, want %+v", s, want)
	}
}

func TestEmptyValuesMeanTheDefault(t *testing.T) {
	s, err := loadSettings(env(map[string]string{"HOST": "", "PORT": " ", "WORKERS": "", "HASH_ITERATIONS": "\t"}),
		func() int { return 2 })
	if err != nil {
		t.Fatal(err)
	}
	if want := (Settings{Host: "127.0.0.1", Port: 8080, Workers: 2, HashIterations: 100}); s != want {
		t.Errorf("%+v, want %+v", s, want)
	}
}

func TestValuesAreRead(t *testing.T) {
	s, err := loadSettings(env(map[string]string{"HOST": "0.0.0.0", "PORT": " 9000 ", "WORKERS": "3", "HASH_ITERATIONS": "7"}), noCPUs)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Settings{Host: "0.0.0.0", Port: 9000, Workers: 3, HashIterations: 7}); s != want {
		t.Errorf("%+v, want %+v", s, want)
	}
	for name, value := range map[string]string{"PORT": "65535", "WORKERS": "1024", "HASH_ITERATIONS": "10000000"} {
		if _, err := loadSettings(env(map[string]string{name: value}), func() int { return 1 }); err != nil {
			t.Errorf("%s=%s, the highest allowed, was refused: %v", name, value, err)
		}
	}
}

func TestBadValuesNameTheVariableAndWhatItAccepts(t *testing.T) {
	for _, c := range []struct{ name, value, want string }{
		{"PORT", "http", "PORT must be a whole number from 1 to 65535, got 'http'."},
		{"PORT", "0", "PORT must be a whole number from 1 to 65535, got '0'."},
		{"PORT", "99999", "PORT must be a whole number from 1 to 65535, got '99999'."},
		{"PORT", "70000", "PORT must be a whole number from 1 to 65535, got '70000'."},
		{"PORT", "80 80", "PORT must be a whole number from 1 to 65535, got '80 80'."},
		{"PORT", "99999999999999999999", "PORT must be a whole number from 1 to 65535, got '99999999999999999999'."},
		{"WORKERS", "0", "WORKERS must be a whole number from 1 to 1024, got '0'."},
		{"WORKERS", "-2", "WORKERS must be a whole number from 1 to 1024, got '-2'."},
		{"WORKERS", "2.5", "WORKERS must be a whole number from 1 to 1024, got '2.5'."},
		{"WORKERS", "abc", "WORKERS must be a whole number from 1 to 1024, got 'abc'."},
		{"WORKERS", "1025", "WORKERS must be a whole number from 1 to 1024, got '1025'."},
		{"HASH_ITERATIONS", "0", "HASH_ITERATIONS must be a whole number from 1 to 10000000, got '0'."},
		{"HASH_ITERATIONS", "10000001", "HASH_ITERATIONS must be a whole number from 1 to 10000000, got '10000001'."},
		{"HASH_ITERATIONS", " 1e3 ", "HASH_ITERATIONS must be a whole number from 1 to 10000000, got '1e3'."},
		// Quoted as Python's repr() quotes, as the Python servers' messages are.
		{"PORT", "it's", `PORT must be a whole number from 1 to 65535, got "it's".`},
		{"PORT", "a\x00b", `PORT must be a whole number from 1 to 65535, got 'a\x00b'.`},
		{"PORT", "\xff", `PORT must be a whole number from 1 to 65535, got '\udcff'.`},
	} {
		_, err := loadSettings(env(map[string]string{c.name: c.value}), func() int { return 1 })
		if err == nil || err.Error() != c.want {
			t.Errorf("%s=%q: %v, want %s", c.name, c.value, err, c.want)
		}
	}
}

func TestTheFirstBadValueIsTheOneNamed(t *testing.T) {
	_, err := loadSettings(env(map[string]string{"PORT": "x", "WORKERS": "y", "HASH_ITERATIONS": "z"}), noCPUs)
	if err == nil || err.Error() != "PORT must be a whole number from 1 to 65535, got 'x'." {
		t.Error(err)
	}
}

// A refusal is one line on stderr, nothing before it, and a non-zero exit.
func TestRunRefusesABadValueInOneLine(t *testing.T) {
	for name, value := range map[string]string{"PORT": "99999", "WORKERS": "abc", "HASH_ITERATIONS": "0"} {
		var stderr lockedBuffer
		code := run(env(map[string]string{name: value}), &stderr, nil)
		want := fmt.Sprintf("go-net-http: %s must be ", name)
		out := stderr.String()
		if code == 0 || len(out) < len(want) || out[:len(want)] != want || countLines(out) != 1 {
			t.Errorf("%s=%s: exit %d, stderr %q", name, value, code, out)
		}
	}
}

func countLines(s string) int {
	n := 0
	for _, r := range s {
		if r == '\n' {
			n++
		}
	}
	return n
}

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// cgroupV2 is a process in the cgroup /kubepods/pod1/ctr of the unified hierarchy.
func cgroupV2(t *testing.T) (root, proc string) {
	dir := t.TempDir()
	root, proc = filepath.Join(dir, "cgroup"), filepath.Join(dir, "proc-self-cgroup")
	write(t, proc, "0::/kubepods/pod1/ctr\n")
	return root, proc
}

func quota(t *testing.T, root, proc string) string {
	t.Helper()
	q, ok := cgroupCPUQuota(root, proc)
	if !ok {
		return "none"
	}
	return fmt.Sprint(q)
}

func TestCgroupV2Quota(t *testing.T) {
	for cpuMax, want := range map[string]string{"max 100000\n": "none", "200000 100000\n": "2", "150000 100000\n": "1.5", "50000 100000\n": "0.5"} {
		root, proc := cgroupV2(t)
		write(t, filepath.Join(root, "kubepods/pod1/ctr/cpu.max"), cpuMax)
		if got := quota(t, root, proc); got != want {
			t.Errorf("cpu.max %q: quota %s, want %s", cpuMax, got, want)
		}
	}
}

func TestCgroupV2TakesTheTightestAncestor(t *testing.T) {
	root, proc := cgroupV2(t)
	write(t, filepath.Join(root, "kubepods/pod1/ctr/cpu.max"), "max 100000\n")
	write(t, filepath.Join(root, "kubepods/pod1/cpu.max"), "300000 100000\n")
	write(t, filepath.Join(root, "kubepods/cpu.max"), "800000 100000\n")
	if got := quota(t, root, proc); got != "3" {
		t.Errorf("quota %s, want 3", got)
	}
}

// Each case is a /proc/self/cgroup and the files under the cgroup mount, and the quota read.
func TestCgroupLayouts(t *testing.T) {
	cases := []struct {
		name, proc string
		files      map[string]string
		want       string
	}{
		// With a private cgroup namespace the container sees its own cgroup as "/" at the mount root.
		{"v2 namespaced mount reads the root", "0::/\n",
			map[string]string{"cpu.max": "250000 100000\n"}, "2.5"},
		// The path in /proc/self/cgroup may be the host's, absent under the container's mount:
		// the walk up reaches the mount's root.
		{"v2 path missing under the mount falls back to its root", "0::/system.slice/docker-abc.scope\n",
			map[string]string{"cpu.max": "100000 100000\n"}, "1"},
		{"v1 quota", "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n",
			map[string]string{"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "400000\n",
				"cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"}, "4"},
		{"v1 unlimited", "3:cpu,cpuacct:/\n",
			map[string]string{"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, "none"},
		// A cpu.max that cannot be parsed falls through to the v1 files in the same directory.
		{"unreadable cpu.max falls through to v1", "0::/\n",
			map[string]string{"cpu.max": "lots 0\n", "cpu.cfs_quota_us": "50000\n", "cpu.cfs_period_us": "100000\n"}, "0.5"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			root, proc := filepath.Join(dir, "cgroup"), filepath.Join(dir, "proc")
			write(t, proc, c.proc)
			for path, text := range c.files {
				write(t, filepath.Join(root, path), text)
			}
			if got := quota(t, root, proc); got != c.want {
				t.Errorf("quota %s, want %s", got, c.want)
			}
		})
	}
}

func TestNoCgroupFilesMeansNoQuota(t *testing.T) {
	dir := t.TempDir()
	if got := quota(t, filepath.Join(dir, "nothing"), filepath.Join(dir, "missing")); got != "none" {
		t.Errorf("quota %s, want none", got)
	}
}

func TestWorkersDefaultRoundsAQuotaUpAndNeverExceedsAffinity(t *testing.T) {
	dir := t.TempDir()
	root, proc := filepath.Join(dir, "cgroup"), filepath.Join(dir, "proc")
	write(t, proc, "0::/\n")
	affinity := runtime.NumCPU()
	write(t, filepath.Join(root, "cpu.max"), "50000 100000\n")
	if got := availableCPUs(affinity, root, proc); got != 1 {
		t.Errorf("a 0.5-CPU quota gives %d, want 1", got)
	}
	write(t, filepath.Join(root, "cpu.max"), fmt.Sprintf("%d 100000\n", (affinity+7)*100000))
	if got := availableCPUs(affinity, root, proc); got != affinity {
		t.Errorf("a quota above the affinity gives %d, want %d", got, affinity)
	}
	write(t, filepath.Join(root, "cpu.max"), "150000 100000\n")
	if got := availableCPUs(64, root, proc); got != 2 {
		t.Errorf("a 64-core host with a 1.5-CPU quota gets %d, want 2", got)
	}
	write(t, filepath.Join(root, "cpu.max"), "max 100000\n")
	if got := availableCPUs(64, root, proc); got != 64 {
		t.Errorf("no quota gives %d, want the affinity, 64", got)
	}
}

// Package check probes the running kernel for what Warden needs and says
// plainly what is missing ('wardend check').
package check

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/wardenhq/warden/bpf/loader"
	"github.com/wardenhq/warden/pkg/cgroupv2"
)

// Result is the outcome of one probe.
type Result struct {
	Name     string
	Required bool // Warden cannot enforce without it
	OK       bool
	Detail   string
}

// Report is the outcome of every probe.
type Report struct {
	Kernel  string
	Results []Result
}

// Options configure Run.
type Options struct {
	// CgroupRoot is the configured attach point; "" means the cgroup2 mount.
	CgroupRoot string
}

// Run probes the kernel. It needs the privileges wardend runs with;
// without them most probes report EPERM, which the report says.
func Run(opts Options) Report {
	var r Report
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		r.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	add := func(name string, required bool, err error, okDetail string) {
		res := Result{Name: name, Required: required, OK: err == nil, Detail: okDetail}
		if err != nil {
			res.Detail = err.Error()
		}
		r.Results = append(r.Results, res)
	}

	_, err := os.Stat("/sys/kernel/btf/vmlinux")
	add("BTF (/sys/kernel/btf/vmlinux)", false, err, "present")

	mount, err := cgroupv2.Mount()
	add("cgroup v2 mount", true, err, mount)
	if opts.CgroupRoot != "" {
		_, err := os.Stat(opts.CgroupRoot)
		add("cgroup_root "+opts.CgroupRoot, true, err, "exists")
	}

	add("bpffs on /sys/fs/bpf", false, bpffs("/sys/fs/bpf"), "mounted (otherwise wardend mounts a private one on its pin dir)")
	add("tracefs", false, tracefs(), "mounted")

	progs := []struct {
		name     string
		typ      ebpf.ProgramType
		required bool
	}{
		{"program type cgroup/connect4,6 (cgroup_sock_addr)", ebpf.CGroupSockAddr, true},
		{"program type sockops", ebpf.SockOps, true},
		{"program type cgroup/sock_create (cgroup_sock)", ebpf.CGroupSock, false},
		{"program type cgroup/getsockopt (cgroup_sockopt)", ebpf.CGroupSockopt, false},
		{"program type raw_tracepoint", ebpf.RawTracepoint, false},
	}
	for _, p := range progs {
		add(p.name, p.required, features.HaveProgramType(p.typ), "loads")
	}
	// Tracing programs can load yet be refused at attach (or the reverse),
	// so these probes load and attach a no-op program for real.
	add("tp_btf/sched_process_fork (load and attach)", true, probeTracing(ebpf.AttachTraceRawTp, "sched_process_fork"), "attaches")
	add("fentry (load and attach)", false, probeTracing(ebpf.AttachTraceFEntry, "security_file_open"), "attaches")
	add("lsm (load and attach)", false, probeLSM(), "attaches")
	_, err = os.Stat("/sys/bus/event_source/devices/kprobe")
	add("kprobes (kprobe PMU)", false, err, "present")
	maps := []struct {
		name     string
		typ      ebpf.MapType
		required bool
	}{
		{"map type sk_storage", ebpf.SkStorage, true},
		{"map type ringbuf", ebpf.RingBuf, true},
		{"map type lpm_trie", ebpf.LPMTrie, true},
		{"map type task_storage", ebpf.TaskStorage, false},
	}
	for _, m := range maps {
		add(m.name, m.required, features.HaveMapType(m.typ), "available")
	}
	add("helper get_current_ancestor_cgroup_id in cgroup_sock_addr", true,
		features.HaveProgramHelper(ebpf.CGroupSockAddr, asm.FnGetCurrentAncestorCgroupId), "available")
	add("Warden's programs pass the verifier", true, loader.Verify(), "loaded and released")
	return r
}

var noop = asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}

func probeTracing(attach ebpf.AttachType, fn string) error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.Tracing, AttachType: attach, AttachTo: fn, License: "GPL", Instructions: noop,
	})
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	defer prog.Close()
	l, err := link.AttachTracing(link.TracingOptions{Program: prog})
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	return l.Close()
}

func probeLSM() error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.LSM, AttachType: ebpf.AttachLSMMac, AttachTo: "file_open", License: "GPL", Instructions: noop,
	})
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	defer prog.Close()
	l, err := link.AttachLSM(link.LSMOptions{Program: prog})
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	return l.Close()
}

func bpffs(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return err
	}
	if st.Type != unix.BPF_FS_MAGIC {
		return errors.New("not mounted")
	}
	return nil
}

func tracefs() error {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	if strings.Contains(string(data), " - tracefs ") {
		return nil
	}
	return errors.New("not mounted (Warden uses tp_btf and raw_tracepoint, which do not need it)")
}

// OK reports whether every required probe passed.
func (r Report) OK() bool {
	for _, res := range r.Results {
		if res.Required && !res.OK {
			return false
		}
	}
	return true
}

// Print writes the report as a table and a verdict.
func (r Report) Print(w io.Writer) {
	fmt.Fprintf(w, "kernel %s\n\n", r.Kernel)
	for _, res := range r.Results {
		mark := "ok  "
		if !res.OK {
			mark = "MISS"
			if !res.Required {
				mark = "no  "
			}
		}
		req := "optional"
		if res.Required {
			req = "required"
		}
		fmt.Fprintf(w, "[%s] %-58s %-8s %s\n", mark, res.Name, req, res.Detail)
	}
	if r.OK() {
		fmt.Fprintln(w, "\nverdict: this host can run Warden")
		return
	}
	fmt.Fprintln(w, "\nverdict: this host cannot run Warden; the required features marked MISS are absent")
}

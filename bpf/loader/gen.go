// Package loader loads Warden's eBPF programs (C sources in the parent
// bpf/ folder) through the Go bindings bpf2go generates in this package,
// attaches them to a cgroup and manages their maps.
package loader

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type target_key -type target_value -type binding -type access_key -type access_value -type proxy_config -type conn_info -type conn_key warden ../warden.c -- -I..
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type lineage_event -type lineage_config -type task_lineage -type image_ref lineage ../lineage.c -- -I..

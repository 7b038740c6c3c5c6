package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/wardenhq/warden/pkg/collectorclient"
)

func runLineage(args []string) int {
	fs := flag.NewFlagSet("warden lineage", flag.ContinueOnError)
	client := collectorFlags(fs)
	jsonOut := fs.Bool("json", false, "print the lineage as JSON")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: warden lineage [--collector URL] [--json] ID\n\nID is an event id or an exec id.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "warden lineage: want exactly one ID (event id or exec id)")
		return 2
	}
	cl, err := client()
	if err != nil {
		return collectorFail("lineage", err)
	}
	ctx, cancel := interruptible()
	defer cancel()
	l, err := cl.Lineage(ctx, fs.Arg(0))
	if err != nil {
		return collectorFail("lineage", err)
	}
	if *jsonOut {
		b, err := json.MarshalIndent(l, "", "  ")
		if err != nil {
			return collectorFail("lineage", err)
		}
		fmt.Println(string(b))
		return 0
	}
	if err := collectorclient.WriteLineage(os.Stdout, l); err != nil {
		return collectorFail("lineage", err)
	}
	return 0
}

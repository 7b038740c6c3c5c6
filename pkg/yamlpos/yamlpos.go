// Package yamlpos recovers where a yaml.v3 syntax error is, so that the
// agent config and the policy can both say file:line for malformed YAML.
package yamlpos

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// yamlLine matches the position yaml.v3 puts in syntax errors.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// contextErrors are the yaml.v3 parser errors that report the zero-based
// line of the enclosing list or mapping (yaml.v3 v3.0.1, parser.fail), where
// every other error reports a one-based line.
var contextErrors = []string{
	"did not find expected key",
	"did not find expected '-' indicator",
	"did not find expected ',' or ']'",
	"did not find expected ',' or '}'",
	"found undefined tag handle",
}

// SyntaxError splits a yaml.v3 syntax error into its one-based line (0 when
// yaml.v3 gave none) and its message without the "yaml: " prefix.
func SyntaxError(err error) (line int, msg string) {
	msg = err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	if slices.Contains(contextErrors, msg) {
		line++ // also right when yaml.v3 left the line out: it was zero
	}
	return line, msg
}

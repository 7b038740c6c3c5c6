package event

// MaxRedisKeys bounds the key names one redis.command event lists; KeyCount
// still counts them all. An MSET of a million keys must not make an event
// too large to record, which would refuse the command.
const MaxRedisKeys = 64

// Redis is the data of a redis.command event: one command, recorded with
// the decision on it before it reaches the server. It holds names and
// counts only, never values: the arguments of SET, AUTH or EVAL are
// exactly what must not end up in the audit log.
type Redis struct {
	// Command is the command name, upper case.
	Command string
	// Subcommand is a container command's subcommand (SET for CONFIG
	// SET), upper case.
	Subcommand string
	// Keys are the key names the command names, at most MaxRedisKeys.
	Keys []string
	// KeyCount is how many keys the command names.
	KeyCount int
	// ArgCount is the number of arguments after the command name.
	ArgCount int
	// Transaction is set for a command queued inside MULTI.
	Transaction bool
	// Inline is set when the client typed the command inline.
	Inline bool
}

// Data implements Payload.
func (r Redis) Data() map[string]any {
	d := map[string]any{"command": r.Command, "arg_count": r.ArgCount}
	setString(d, "subcommand", r.Subcommand)
	if r.KeyCount > 0 {
		keys := r.Keys
		if len(keys) > MaxRedisKeys {
			keys = keys[:MaxRedisKeys]
		}
		d["keys"] = keys
		d["key_count"] = r.KeyCount
	}
	if r.Transaction {
		d["transaction"] = true
	}
	if r.Inline {
		d["inline"] = true
	}
	return d
}

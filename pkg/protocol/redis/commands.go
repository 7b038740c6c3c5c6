package redis

import (
	"bytes"
	"strconv"
)

// keySpec is where a command's keys are, as redis-server's legacy key
// specification gives it: args[first], args[first+step], ... up to
// args[last]; a negative last counts from the end (-1 the last argument).
type keySpec struct{ first, last, step int }

// keySpecs covers the commands of Redis 7 whose keys sit at fixed
// positions. Commands with keys found by reading their arguments
// (numkeys, STREAMS) are in movableKeys; commands in neither have no keys.
var keySpecs = map[string]keySpec{}

func init() {
	one := keySpec{1, 1, 1}
	for _, c := range []string{
		"get", "set", "setnx", "setex", "psetex", "append", "strlen", "incr", "decr", "incrby", "decrby",
		"incrbyfloat", "getrange", "setrange", "getset", "getdel", "getex", "substr", "getbit", "setbit",
		"bitcount", "bitpos", "bitfield", "bitfield_ro", "type", "ttl", "pttl", "expire", "pexpire", "expireat",
		"pexpireat", "expiretime", "pexpiretime", "persist", "dump", "restore", "restore-asking", "move",
		"lpush", "rpush", "lpushx", "rpushx", "lpop", "rpop", "llen", "lrange", "lindex", "lset", "lrem",
		"ltrim", "linsert", "lpos", "sadd", "srem", "spop", "srandmember", "scard", "sismember", "smismember",
		"smembers", "sscan", "zadd", "zrem", "zincrby", "zcard", "zcount", "zscore", "zmscore", "zrank",
		"zrevrank", "zrange", "zrangebyscore", "zrevrangebyscore", "zrangebylex", "zrevrangebylex", "zlexcount",
		"zremrangebyrank", "zremrangebyscore", "zremrangebylex", "zrevrange", "zpopmin", "zpopmax",
		"zrandmember", "zscan", "hset", "hsetnx", "hget", "hmset", "hmget", "hdel", "hlen", "hstrlen", "hkeys",
		"hvals", "hgetall", "hexists", "hincrby", "hincrbyfloat", "hrandfield", "hscan", "xadd", "xrange",
		"xrevrange", "xlen", "xdel", "xtrim", "xack", "xpending", "xclaim", "xautoclaim", "xsetid", "pfadd",
		"geoadd", "geopos", "geodist", "geohash", "georadius_ro", "georadiusbymember_ro", "geosearch",
		"georadius", "georadiusbymember", "sort", "sort_ro", "pfdebug",
	} {
		keySpecs[c] = one
	}
	for _, c := range []string{
		"del", "unlink", "exists", "touch", "mget", "watch", "pfcount", "pfmerge", "sinter", "sunion", "sdiff",
		"sinterstore", "sunionstore", "sdiffstore",
	} {
		keySpecs[c] = keySpec{1, -1, 1}
	}
	for _, c := range []string{"rename", "renamenx", "copy", "smove", "rpoplpush", "lmove", "blmove", "brpoplpush", "geosearchstore", "lcs"} {
		keySpecs[c] = keySpec{1, 2, 1}
	}
	for _, c := range []string{"blpop", "brpop", "bzpopmin", "bzpopmax"} {
		keySpecs[c] = keySpec{1, -2, 1}
	}
	keySpecs["bitop"] = keySpec{2, -1, 1} // BITOP op destkey srckey...
	for _, c := range []string{"mset", "msetnx"} {
		keySpecs[c] = keySpec{1, -1, 2}
	}
	// Container commands whose key is the argument after the subcommand.
	for _, c := range []string{"object", "memory", "xinfo", "xgroup"} {
		keySpecs[c] = keySpec{2, 2, 1}
	}
}

// numkeysAt gives, for commands that say how many keys follow, where
// that count is; the keys come right after it. dest is set for commands
// whose first argument is a destination key as well.
var numkeysAt = map[string]struct{ at, dest int }{
	"eval": {2, 0}, "evalsha": {2, 0}, "eval_ro": {2, 0}, "evalsha_ro": {2, 0}, "fcall": {2, 0}, "fcall_ro": {2, 0},
	"zunion": {1, 0}, "zinter": {1, 0}, "zdiff": {1, 0}, "sintercard": {1, 0}, "zintercard": {1, 0},
	"lmpop": {1, 0}, "zmpop": {1, 0}, "blmpop": {2, 0}, "bzmpop": {2, 0},
	"zunionstore": {2, 1}, "zinterstore": {2, 1}, "zdiffstore": {2, 1},
}

// Keys returns the key names in a command's arguments (args[0] is the
// command name), as far as the proxy knows the command; nil when it has
// none or is unknown.
func Keys(args [][]byte) [][]byte {
	if len(args) == 0 {
		return nil
	}
	name := string(bytes.ToLower(args[0]))
	n := len(args)
	if spec, ok := keySpecs[name]; ok {
		last := spec.last
		if last < 0 {
			last = n + last
		}
		var keys [][]byte
		for i := spec.first; i <= last && i < n; i += spec.step {
			keys = append(keys, args[i])
		}
		return keys
	}
	if nk, ok := numkeysAt[name]; ok {
		var keys [][]byte
		if nk.dest > 0 && nk.dest < n {
			keys = append(keys, args[nk.dest])
		}
		if nk.at >= n {
			return keys
		}
		count, err := strconv.Atoi(string(args[nk.at]))
		if err != nil || count < 0 {
			return keys
		}
		for i := nk.at + 1; i <= nk.at+count && i < n; i++ {
			keys = append(keys, args[i])
		}
		return keys
	}
	switch name {
	case "xread", "xreadgroup":
		// [COUNT n] [BLOCK ms] [GROUP g c] [NOACK] STREAMS key1 key2 id1 id2,
		// read as the server's xreadGetKeys reads it.
		for i := 1; i < n; i++ {
			switch string(bytes.ToLower(args[i])) {
			case "count", "block":
				i++
			case "group":
				i += 2
			case "streams":
				rest := args[i+1:]
				return rest[:len(rest)/2]
			}
		}
	case "migrate":
		// MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH ..] [KEYS k...]
		var keys [][]byte
		if n > 3 && len(args[3]) > 0 {
			keys = append(keys, args[3])
		}
		for i := 6; i < n; i++ {
			if bytes.EqualFold(args[i], []byte("keys")) {
				return append(keys, args[i+1:]...)
			}
		}
		return keys
	}
	return nil
}

// containers are the commands whose first argument is a subcommand that
// rules may name ("config set", "client kill").
var containers = map[string]bool{
	"acl": true, "client": true, "cluster": true, "command": true, "config": true, "debug": true,
	"function": true, "latency": true, "memory": true, "module": true, "object": true, "pubsub": true,
	"script": true, "slowlog": true, "xgroup": true, "xinfo": true,
}

// Subcommand returns the subcommand of a container command in lower case
// ("set" for CONFIG SET), "" for other commands.
func Subcommand(args [][]byte) string {
	if len(args) < 2 || !containers[string(bytes.ToLower(args[0]))] {
		return ""
	}
	return string(bytes.ToLower(args[1]))
}

// scripting are the commands that run code on the server. A script may
// call any command, out of the proxy's sight.
var scripting = map[string]bool{
	"eval": true, "evalsha": true, "eval_ro": true, "evalsha_ro": true,
	"fcall": true, "fcall_ro": true, "function": true, "script": true,
}

// Scripting reports whether the command named name (lower case) runs or
// manages server-side code.
func Scripting(name string) bool { return scripting[name] }

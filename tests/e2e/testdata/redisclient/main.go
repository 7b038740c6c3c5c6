// Command redisclient is the go-redis client the end-to-end tests run
// inside a logged-in session, so its connections go through Warden's BPF
// redirection like any user's program. It uses go-redis's defaults:
// RESP3 first (HELLO 3), then RESP2 when the server says NOPROTO, and no
// password. It prints one "name: result" line per command.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/redis/go-redis/v9"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: redisclient ADDR basic|pipeline")
		os.Exit(2)
	}
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: os.Args[1], MaxRetries: -1})
	defer c.Close()
	print := func(name string, v any, err error) {
		if err != nil {
			fmt.Printf("%s: error: %v\n", name, err)
			return
		}
		fmt.Printf("%s: %v\n", name, v)
	}
	switch os.Args[2] {
	case "basic":
		v, err := c.Do(ctx, "ACL", "WHOAMI").Text()
		print("whoami", v, err)
		s, err := c.Set(ctx, "goredis:k", "v1", 0).Result()
		print("set", s, err)
		v, err = c.Get(ctx, "goredis:k").Result()
		print("get", v, err)
		v, err = c.Get(ctx, "user:1:email").Result()
		print("email", v, err)
		n, err := c.Eval(ctx, "return redis.call('flushall')", nil).Result()
		print("eval", n, err)
	case "pipeline":
		p := c.Pipeline()
		set := p.Set(ctx, "pipe:1", "x", 0)
		flush := p.FlushAll(ctx)
		get := p.Get(ctx, "pipe:1")
		p.Exec(ctx)
		print("pipe-set", set.Val(), set.Err())
		print("pipe-flushall", flush.Val(), flush.Err())
		print("pipe-get", get.Val(), get.Err())
		tx := c.TxPipeline()
		tset := tx.Set(ctx, "tx:1", "y", 0)
		tflush := tx.FlushAll(ctx)
		_, err := tx.Exec(ctx)
		print("tx-set", tset.Val(), tset.Err())
		print("tx-flushall", tflush.Val(), tflush.Err())
		print("tx", "", err)
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[2])
		os.Exit(2)
	}
}

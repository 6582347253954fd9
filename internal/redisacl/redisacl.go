// Package redisacl is the one list of what a sale's purchase pods may do in
// its Redis. The operator writes it into the managed Redis' ACL file and the
// purchase tests run against a Redis configured from it, so a command the
// service starts using without adding it here fails the tests, not a sale.
package redisacl

import "strings"

// User is the ACL user the purchase pods log in as.
const User = "purchase"

// Commands are the only commands the purchase pods run. Everything else
// (FLUSHALL, FLUSHDB, CONFIG, REPLICAOF/SLAVEOF, DEBUG, KEYS, SHUTDOWN,
// MODULE, ACL, SCRIPT FLUSH, MONITOR, ...) is refused. EVAL/EVALSHA run our
// own scripts; the keys a script touches are checked against the key
// pattern like any other command's (Redis ≥ 7).
var Commands = []string{
	// connection set-up by go-redis: HELLO (with AUTH), PING. The service
	// turns off CLIENT SETINFO (DisableIdentity): Redis 7.0 does not know
	// the command, and an ACL naming it fails to load there.
	"hello", "auth", "ping",
	// seat locks, sold markers and the any-seat pool
	"get", "set", "del", "sadd", "spop", "srem", "scard",
	// our Lua scripts (compare-and-delete, take-any); SCRIPT LOAD and
	// EXISTS only, never SCRIPT FLUSH or KILL
	"eval", "evalsha", "script|load", "script|exists",
	// cancellations (issue 19): the cancelling pod publishes, every pod
	// subscribes, on the sale's own channel only (ChannelPattern)
	"publish", "subscribe", "unsubscribe",
}

// KeyPattern is the only key space a sale's pods may touch: its prefix.
func KeyPattern(sale string) string { return "~fs:" + sale + ":*" }

// ChannelPattern is the only Pub/Sub channel space of a sale's pods: its
// prefix (the cancellation channel, package seatlock).
func ChannelPattern(sale string) string { return "&fs:" + sale + ":*" }

// Rules is the ACL rule string (after the user name) of the purchase user
// with the given password: on, only this password, only the sale's keys
// and channels, only Commands.
func Rules(sale, password string) string {
	r := []string{"on", "resetpass", ">" + password, "resetkeys", KeyPattern(sale), "resetchannels", ChannelPattern(sale), "-@all"}
	for _, c := range Commands {
		r = append(r, "+"+c)
	}
	return strings.Join(r, " ")
}

// File is an ACL file (redis.conf's aclfile) for a sale: the default user
// off (no anonymous access), and the purchase user.
func File(sale, password string) string {
	return "user default off resetpass resetkeys resetchannels -@all\n" +
		"user " + User + " " + Rules(sale, password) + "\n"
}

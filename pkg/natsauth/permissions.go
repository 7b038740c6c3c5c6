package natsauth

import (
	"github.com/nats-io/jwt/v2"

	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/review"
)

// Role is what a NATS user is for; it decides the user's permissions.
type Role string

// Roles. Every user Warden issues has exactly one.
const (
	// RoleAgent is one bastion's wardend: it publishes its own host's
	// events, asks the collector for reviews, reads its own host's review
	// updates and commands, and stores recordings. It cannot read the
	// event stream.
	RoleAgent Role = "agent"
	// RoleCollector consumes and manages the streams, answers review
	// requests and publishes review updates and commands.
	RoleCollector Role = "collector"
	// RoleSOC reads: it may tail warden.events.> and warden.reviews.>,
	// and create, read and delete durable consumers named after itself
	// on WARDEN_EVENTS. It publishes nothing on a Warden subject.
	RoleSOC Role = "soc"
)

// Valid reports whether r is one of the roles above.
func (r Role) Valid() bool { return r == RoleAgent || r == RoleCollector || r == RoleSOC }

// Object store bucket of SSH recordings, as JetStream names its stream
// and subjects (agent/recording.Bucket).
const (
	recordingsBucket = "WARDEN_RECORDINGS"
	recordingsStream = "OBJ_" + recordingsBucket
)

// InboxPrefix is the reply-subject prefix a user of role r named name
// must use (nats.CustomInboxPrefix): agents and collectors get one of
// their own, so that no agent can read another's replies (review
// answers, JetStream acknowledgements). SOC users keep the default
// _INBOX, so that the stock nats CLI works.
func InboxPrefix(r Role, name string) string {
	switch r {
	case RoleAgent:
		return "_INBOX_" + event.HostToken(name)
	case RoleCollector:
		return "_INBOX_collector_" + event.HostToken(name)
	default:
		return "_INBOX"
	}
}

// Permissions returns what the NATS server lets a user of role r named
// name publish and subscribe to. For an agent, name is its host id.
func Permissions(r Role, name string) jwt.Permissions {
	var p jwt.Permissions
	switch r {
	case RoleAgent:
		cmd := event.CommandConsumer(name)
		p.Pub.Allow.Add(
			// Its own host's events, and nothing else on the stream.
			event.HostSubjects(name),
			"$JS.API.STREAM.INFO."+event.StreamName,
			// Review requests, answered on its own inbox.
			review.SubjectOpen, review.SubjectUse, review.SubjectGet, review.SubjectGrants,
			// Its own durable consumer of kills and locks.
			"$JS.API.CONSUMER.*."+event.CommandStreamName+"."+cmd,
			"$JS.API.CONSUMER.MSG.NEXT."+event.CommandStreamName+"."+cmd,
			"$JS.ACK."+event.CommandStreamName+"."+cmd+".>",
			// SSH recordings: chunks and metadata into the object store.
			"$O."+recordingsBucket+".>",
			"$JS.API.STREAM.INFO."+recordingsStream,
			"$JS.API.STREAM.CREATE."+recordingsStream,
			"$JS.API.STREAM.UPDATE."+recordingsStream,
			"$JS.API.STREAM.MSG.GET."+recordingsStream,
			"$JS.API.STREAM.PURGE."+recordingsStream,
			"$JS.API.DIRECT.GET."+recordingsStream+".>",
		)
		p.Sub.Allow.Add(
			InboxPrefix(r, name)+".>",
			review.HostUpdates(name),
		)
	case RoleCollector:
		p.Pub.Allow.Add(
			"$JS.API.>",
			"$JS.ACK."+event.StreamName+".>",
			"$JS.FC.>",
			event.CommandStreamSubjects,
			review.SubjectUpdates+".>",
			"$O."+recordingsBucket+".>",
			// Active/standby collectors' ingest lease (collector.LeaseBucket).
			"$KV.WARDEN_COLLECTOR_LEASE.>",
		)
		// The collector never speaks for an agent.
		p.Pub.Deny.Add(event.StreamSubjects)
		p.Sub.Allow.Add(
			"warden.review.>",
			InboxPrefix(r, name)+".>",
		)
		// Replies to review requests go to the requester's own inbox.
		p.Resp = &jwt.ResponsePermission{MaxMsgs: 1}
	case RoleSOC:
		p.Pub.Allow.Add(
			"$JS.API.INFO",
			"$JS.API.STREAM.NAMES",
			"$JS.API.STREAM.LIST",
			"$JS.API.STREAM.INFO."+event.StreamName,
			"$JS.API.CONSUMER.NAMES."+event.StreamName,
			"$JS.API.CONSUMER.LIST."+event.StreamName,
			// Durable consumers named after the SOC user only.
			"$JS.API.CONSUMER.*."+event.StreamName+"."+name,
			"$JS.API.CONSUMER.*."+event.StreamName+"."+name+".>",
			"$JS.API.CONSUMER.DURABLE.CREATE."+event.StreamName+"."+name,
			"$JS.API.CONSUMER.MSG.NEXT."+event.StreamName+"."+name,
			"$JS.ACK."+event.StreamName+"."+name+".>",
		)
		p.Sub.Allow.Add(
			event.StreamSubjects,
			review.SubjectUpdates+".>",
			InboxPrefix(r, name)+".>",
		)
	}
	return p
}

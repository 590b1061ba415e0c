package natsintake

import (
	"context"
	"fmt"
	"time"

	"github.com/m2mhub/m2mhub/metering"
	"github.com/nats-io/nats.go/jetstream"
)

// Retention of the metering streams. Usage is consumed within seconds; a
// week covers a long hub outage. Dead letters and receipts are for people
// and offline providers to catch up on, so they are kept longer.
const (
	usageMaxAge    = 7 * 24 * time.Hour
	dlqMaxAge      = 30 * 24 * time.Hour
	receiptsMaxAge = 30 * 24 * time.Hour
	// DefaultDuplicates is the JetStream de-duplication window of the
	// usage stream.
	DefaultDuplicates = 2 * time.Minute
)

// EnsureStreams creates or updates the three metering streams: M2M_USAGE on
// usage.* (file storage, the given de-duplication window, discard old,
// seven days), M2M_DLQ on dlq.usage.* and M2M_RECEIPTS on receipts.*, each
// with one replica (a single NATS server).
func EnsureStreams(ctx context.Context, js jetstream.JetStream, duplicates time.Duration) error {
	return EnsureStreamsReplicated(ctx, js, duplicates, 1)
}

// EnsureStreamsReplicated is EnsureStreams with replicas copies of each
// stream, for a NATS cluster (3 on a 3-node cluster: a stream stays
// writable while one node is down). replicas below 1 means 1.
func EnsureStreamsReplicated(ctx context.Context, js jetstream.JetStream, duplicates time.Duration, replicas int) error {
	if duplicates <= 0 {
		duplicates = DefaultDuplicates
	}
	replicas = max(replicas, 1)
	for _, sc := range []jetstream.StreamConfig{
		{
			Name: metering.UsageStream, Subjects: []string{metering.UsageSubjects},
			Storage: jetstream.FileStorage, Duplicates: duplicates,
			Discard: jetstream.DiscardOld, MaxAge: usageMaxAge, Replicas: replicas,
		},
		{
			Name: metering.DLQStream, Subjects: []string{metering.DLQSubjects},
			Storage: jetstream.FileStorage, Duplicates: duplicates,
			Discard: jetstream.DiscardOld, MaxAge: dlqMaxAge, Replicas: replicas,
		},
		{
			Name: metering.ReceiptsStream, Subjects: []string{metering.ReceiptsSubjects},
			Storage: jetstream.FileStorage, Duplicates: duplicates,
			Discard: jetstream.DiscardOld, MaxAge: receiptsMaxAge, Replicas: replicas,
		},
	} {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("natsintake: stream %s: %w", sc.Name, err)
		}
	}
	return nil
}

// EnsureReceiptsConsumer creates provider id's durable pull consumer on
// M2M_RECEIPTS, filtered to receipts.<id>. The hub creates it because the
// provider's NATS permissions only let it read from it (see
// natsembed.ProviderPermissions): a provider that may create consumers
// could point one at another provider's subjects.
func EnsureReceiptsConsumer(ctx context.Context, js jetstream.JetStream, id string) error {
	if !metering.ValidSubjectToken(id) {
		return fmt.Errorf("natsintake: provider id %q cannot be a subject token", id)
	}
	_, err := js.CreateOrUpdateConsumer(ctx, metering.ReceiptsStream, jetstream.ConsumerConfig{
		Durable:       metering.ReceiptsConsumer(id),
		FilterSubject: metering.ReceiptsSubject(id),
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxDeliver:    -1,
	})
	if err != nil {
		return fmt.Errorf("natsintake: receipts consumer of %s: %w", id, err)
	}
	return nil
}

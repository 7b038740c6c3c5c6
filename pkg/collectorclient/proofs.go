package collectorclient

import (
	"context"
	"net/url"

	"github.com/wardenhq/warden/pkg/event"
)

// Proof fetches the proof bundle of event id (GET /v1/proofs/{id}). It
// does not verify it: see event.ProofBundle.Verify.
func (c *Client) Proof(ctx context.Context, id string) (*event.ProofBundle, error) {
	var b event.ProofBundle
	if err := c.get(ctx, "/v1/proofs/"+url.PathEscape(id), nil, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

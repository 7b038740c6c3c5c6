package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/wardenhq/warden/collector/store"
	"github.com/wardenhq/warden/pkg/event"
)

// proof answers GET /v1/proofs/{id}: the event's proof bundle (see
// event.ProofBundle) against the newest checkpoint of its host that covers
// its seq. The collector builds the inclusion proof from the leaves it
// stored, starting at the compact range of the newest covered checkpoint
// below the event, so the cost is the events since that checkpoint, not
// the host's whole history. A bundle for a tampered event is still served:
// it is the verification (warden verify) that fails, and says why.
func (s *Server) proof(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id := r.PathValue("id")
	row, err := s.cfg.Store.Get(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no event with id %q", id))
		return
	}
	if err != nil {
		s.internal(w, err)
		return
	}
	e, err := row.Event()
	if err != nil {
		s.internal(w, err)
		return
	}
	b := event.ProofBundle{Format: event.ProofFormat, Event: row.Raw, Integrity: row.Integrity, Inclusion: []string{}}
	if s.cfg.Keys != nil {
		if pub, ok := s.cfg.Keys.PublicKey(e.Host.ID); ok {
			b.Key, _ = event.NoteVerifierKey(e.Host.ID, pub)
		}
	}
	if e.Schema == event.SchemaV1 {
		// Signed on its own: the bundle is the event and the key.
		writeJSON(w, http.StatusOK, b)
		return
	}
	if e.Seq == 0 {
		writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("event %s (%s) is not part of an agent's log: collectors raise it", id, e.Type))
		return
	}
	cp, err := s.cfg.Store.LatestCheckpoint(ctx, e.Host.ID, false, e.Seq, 0)
	if errors.Is(err, store.ErrNoCheckpoint) {
		writeError(w, http.StatusConflict, fmt.Sprintf("no checkpoint of host %s covers event %s (seq %d) yet", e.Host.ID, id, e.Seq))
		return
	}
	if err != nil {
		s.internal(w, err)
		return
	}
	var m uint64
	var frontier [][]byte
	if e.Seq > 1 {
		base, err := s.cfg.Store.LatestCheckpoint(ctx, e.Host.ID, true, 0, e.Seq-1)
		switch {
		case err == nil:
			m, frontier = base.Size, base.Frontier
		case !errors.Is(err, store.ErrNoCheckpoint):
			s.internal(w, err)
			return
		}
	}
	seqs, hashes, err := s.cfg.Store.Leaves(ctx, e.Host.ID, m+1, cp.Size)
	if err != nil {
		s.internal(w, err)
		return
	}
	leaves := make([][]byte, 0, len(hashes))
	for i, h := range hashes {
		if seqs[i] != m+1+uint64(i) {
			writeError(w, http.StatusConflict, fmt.Sprintf("the collector lacks event seq %d of host %s, which the checkpoint covers: no proof can be built", m+1+uint64(i), e.Host.ID))
			return
		}
		leaf, err := event.LeafHash(h)
		if err != nil {
			s.internal(w, fmt.Errorf("stored leaf seq %d of host %s: %w", seqs[i], e.Host.ID, err))
			return
		}
		leaves = append(leaves, leaf)
	}
	if uint64(len(leaves)) != cp.Size-m {
		writeError(w, http.StatusConflict, fmt.Sprintf("the collector holds events up to seq %d of host %s, the checkpoint covers %d: no proof can be built", m+uint64(len(leaves)), e.Host.ID, cp.Size))
		return
	}
	proof, err := event.InclusionProof(e.Seq-1, m, frontier, leaves)
	if err != nil {
		s.internal(w, err)
		return
	}
	dc, err := event.DecodeCheckpoint(cp.Raw)
	if err != nil {
		s.internal(w, fmt.Errorf("stored checkpoint %s: %w", cp.ID, err))
		return
	}
	b.LeafIndex, b.TreeSize, b.Inclusion = e.Seq-1, cp.Size, event.EncodeHashes(proof)
	b.Checkpoint, b.CheckpointID = dc.Note, cp.ID
	writeJSON(w, http.StatusOK, b)
}

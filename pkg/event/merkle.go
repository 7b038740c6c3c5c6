package event

import (
	"crypto"
	_ "crypto/sha256" // registers crypto.SHA256 for the RFC 6962 hasher
	"encoding/hex"
	"fmt"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// The Merkle log of one agent (schema warden.event/v2).
//
// Every event an agent seals is one leaf of an RFC 6962 Merkle tree: leaf
// index seq-1, leaf data the 32 raw bytes of the event's hash (the SHA-256
// of its canonical form), leaf hash SHA-256(0x00 || data). The agent signs
// the tree's head in checkpoints (see checkpoint.go); an auditor proves one
// event's inclusion with an RFC 6962 inclusion proof, and that a later
// checkpoint extends an earlier one with a consistency proof.

// Hasher is the RFC 6962 SHA-256 hasher of every Warden Merkle log.
var Hasher = rfc6962.New(crypto.SHA256)

var rangeFactory = &compact.RangeFactory{Hash: Hasher.HashChildren}

// LeafHash returns the Merkle leaf hash of an event given its hex hash.
func LeafHash(eventHash string) ([]byte, error) {
	raw, err := hex.DecodeString(eventHash)
	if err != nil || len(raw) != 32 {
		return nil, fmt.Errorf("event hash %q is not 64 hex digits", eventHash)
	}
	return Hasher.HashLeaf(raw), nil
}

// MerkleLog is an append-only Merkle tree held as a compact range (log2 n
// hashes) plus the leaves appended since a mark: the last checkpoint. It
// gives the root at any size from the mark on, and the consistency proof
// from the mark to the current size, without keeping the whole tree. It is
// not safe for concurrent use.
type MerkleLog struct {
	tree *compact.Range // leaves [0, Size)
	// mark is the compact range at the mark; since the leaf hashes after it.
	mark  *compact.Range
	since [][]byte
}

// NewMerkleLog returns an empty log, marked at size 0.
func NewMerkleLog() *MerkleLog {
	return &MerkleLog{tree: rangeFactory.NewEmptyRange(0), mark: rangeFactory.NewEmptyRange(0)}
}

// ResumeMerkleLog returns a log marked at size with the given compact range
// hashes (Frontier at the mark), then extended by leaves.
func ResumeMerkleLog(size uint64, frontier [][]byte, leaves [][]byte) (*MerkleLog, error) {
	mark, err := rangeFactory.NewRange(0, size, frontier)
	if err != nil {
		return nil, fmt.Errorf("merkle log at size %d: %w", size, err)
	}
	l := &MerkleLog{tree: clone(mark), mark: mark}
	for _, h := range leaves {
		l.Append(h)
	}
	return l, nil
}

func clone(r *compact.Range) *compact.Range {
	hs := r.Hashes()
	c, err := rangeFactory.NewRange(r.Begin(), r.End(), append([][]byte(nil), hs...))
	if err != nil {
		panic(fmt.Sprintf("clone compact range: %v", err)) // cannot happen: same shape
	}
	return c
}

// Append adds one leaf hash (see LeafHash).
func (l *MerkleLog) Append(leafHash []byte) {
	if err := l.tree.Append(leafHash, nil); err != nil {
		panic(fmt.Sprintf("merkle append: %v", err)) // only for a range not starting at 0
	}
	l.since = append(l.since, leafHash)
}

// Size is the number of leaves.
func (l *MerkleLog) Size() uint64 { return l.tree.End() }

// MarkSize is the size at the mark.
func (l *MerkleLog) MarkSize() uint64 { return l.mark.End() }

// Since returns the leaf hashes appended after the mark (not a copy).
func (l *MerkleLog) Since() [][]byte { return l.since }

// Frontier returns the compact range hashes at the mark: what
// ResumeMerkleLog needs, together with the leaves since.
func (l *MerkleLog) Frontier() [][]byte { return l.mark.Hashes() }

// Range returns the compact range hashes at the current size (not a
// copy).
func (l *MerkleLog) Range() [][]byte { return l.tree.Hashes() }

// Root returns the root hash at the current size.
func (l *MerkleLog) Root() []byte { return rootOf(l.tree) }

func rootOf(r *compact.Range) []byte {
	if r.End() == 0 {
		return Hasher.EmptyRoot()
	}
	root, err := r.GetRootHash(nil)
	if err != nil {
		panic(fmt.Sprintf("merkle root: %v", err))
	}
	return root
}

// RootAt returns the root hash at a size between the mark and the current
// size.
func (l *MerkleLog) RootAt(size uint64) ([]byte, error) {
	m := l.mark.End()
	if size < m || size > l.Size() {
		return nil, fmt.Errorf("root at size %d: the log knows sizes %d to %d", size, m, l.Size())
	}
	r := clone(l.mark)
	for _, h := range l.since[:size-m] {
		if err := r.Append(h, nil); err != nil {
			return nil, err
		}
	}
	return rootOf(r), nil
}

// MarkAt moves the mark to size (between the mark and the current size),
// forgetting the leaves before it.
func (l *MerkleLog) MarkAt(size uint64) error {
	m := l.mark.End()
	if size < m || size > l.Size() {
		return fmt.Errorf("mark at size %d: the log knows sizes %d to %d", size, m, l.Size())
	}
	if size == l.Size() {
		// The usual case (a checkpoint of the whole log): no rehashing.
		l.mark = clone(l.tree)
		l.since = l.since[:0]
		return nil
	}
	for _, h := range l.since[:size-m] {
		if err := l.mark.Append(h, nil); err != nil {
			return err
		}
	}
	l.since = append([][]byte(nil), l.since[size-m:]...)
	return nil
}

// Consistency returns the RFC 6962 consistency proof from the mark to the
// current size.
func (l *MerkleLog) Consistency() ([][]byte, error) {
	m, n := l.mark.End(), l.Size()
	nodes, err := proof.Consistency(m, n)
	if err != nil {
		return nil, err
	}
	return buildProof(nodes, treeSlice{m: m, frontier: l.mark.Hashes(), leaves: l.since}.node)
}

// InclusionProof returns the RFC 6962 inclusion proof of leaf index in the
// tree of size m+len(leaves) whose compact range at size m is frontier and
// whose leaves from m on are leaves. index must be at least m: the proof
// needs the leaf itself. With m = 0 (and no frontier), leaves is the whole
// tree.
func InclusionProof(index, m uint64, frontier, leaves [][]byte) ([][]byte, error) {
	size := m + uint64(len(leaves))
	if index < m {
		return nil, fmt.Errorf("inclusion proof of leaf %d: the leaves known start at %d", index, m)
	}
	nodes, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, err
	}
	return buildProof(nodes, treeSlice{m: m, frontier: frontier, leaves: leaves}.node)
}

// treeSlice is what a proof can be built from: the compact range of a
// tree at size m and the leaves after it.
type treeSlice struct {
	m        uint64
	frontier [][]byte
	leaves   [][]byte
}

// node returns the hash of a perfect subtree: the frontier nodes it holds
// (a subtree that starts before m is tiled by them up to m) merged with
// the leaves it holds from m on.
func (ts treeSlice) node(id compact.NodeID) ([]byte, error) {
	b, e := id.Coverage()
	m := ts.m
	if e > m+uint64(len(ts.leaves)) {
		return nil, fmt.Errorf("node %+v is beyond the tree of size %d", id, m+uint64(len(ts.leaves)))
	}
	if b >= m {
		return subtreeRoot(ts.leaves[b-m : e-m]), nil
	}
	mid := min(e, m)
	var hs [][]byte
	for i, nid := range compact.RangeNodes(0, m, nil) {
		if nb, ne := nid.Coverage(); nb >= b && ne <= mid {
			hs = append(hs, ts.frontier[i])
		}
	}
	r, err := rangeFactory.NewRange(b, mid, hs)
	if err != nil {
		return nil, fmt.Errorf("node %+v from the compact range at %d: %w", id, m, err)
	}
	for _, h := range ts.leaves[:e-mid] {
		if err := r.Append(h, nil); err != nil {
			return nil, err
		}
	}
	// A complete aligned subtree collapses to one node.
	if hs := r.Hashes(); len(hs) == 1 {
		return hs[0], nil
	}
	return nil, fmt.Errorf("node %+v: the compact range at %d does not tile it", id, m)
}

// RootOf returns the root of the tree made of leaves.
func RootOf(leaves [][]byte) []byte {
	r := rangeFactory.NewEmptyRange(0)
	for _, h := range leaves {
		_ = r.Append(h, nil)
	}
	return rootOf(r)
}

// VerifyInclusion checks an inclusion proof of leafHash at index in the tree
// of the given size and root.
func VerifyInclusion(index, size uint64, leafHash []byte, p [][]byte, root []byte) error {
	return proof.VerifyInclusion(Hasher, index, size, leafHash, p, root)
}

// VerifyConsistency checks that the tree (size2, root2) extends (size1,
// root1).
func VerifyConsistency(size1, size2 uint64, p [][]byte, root1, root2 []byte) error {
	return proof.VerifyConsistency(Hasher, size1, size2, p, root1, root2)
}

func buildProof(nodes proof.Nodes, hash func(compact.NodeID) ([]byte, error)) ([][]byte, error) {
	hs := make([][]byte, len(nodes.IDs))
	for i, id := range nodes.IDs {
		h, err := hash(id)
		if err != nil {
			return nil, err
		}
		hs[i] = h
	}
	return nodes.Rehash(hs, Hasher.HashChildren)
}

// subtreeRoot hashes a perfect subtree (len(leaves) a power of two).
func subtreeRoot(leaves [][]byte) []byte {
	if len(leaves) == 1 {
		return leaves[0]
	}
	half := len(leaves) / 2
	return Hasher.HashChildren(subtreeRoot(leaves[:half]), subtreeRoot(leaves[half:]))
}

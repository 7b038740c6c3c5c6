package event

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"strings"
	"testing"
)

func leaf(i int) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(i))
	h := sha256.Sum256(b[:])
	return Hasher.HashLeaf(h[:])
}

// Every consistency proof the log gives from its mark verifies, every
// inclusion proof verifies against the root, and neither verifies against
// another tree.
func TestMerkleLogProofs(t *testing.T) {
	var leaves [][]byte
	log := NewMerkleLog()
	for n := 1; n <= 70; n++ {
		leaves = append(leaves, leaf(n))
		log.Append(leaf(n))
		if !bytes.Equal(log.Root(), RootOf(leaves)) {
			t.Fatalf("size %d: root differs from a rebuilt tree", n)
		}
		m := log.MarkSize()
		p, err := log.Consistency()
		if err != nil {
			t.Fatalf("consistency %d->%d: %v", m, n, err)
		}
		oldRoot := RootOf(leaves[:m])
		if m > 0 {
			if err := VerifyConsistency(m, uint64(n), p, oldRoot, log.Root()); err != nil {
				t.Fatalf("consistency %d->%d does not verify: %v", m, n, err)
			}
			forged := append([][]byte(nil), leaves[:m]...)
			forged[0] = leaf(1000)
			if err := VerifyConsistency(m, uint64(n), p, RootOf(forged), log.Root()); err == nil {
				t.Fatalf("consistency %d->%d verifies from a rewritten tree", m, n)
			}
		}
		for i := range leaves {
			ip, err := InclusionProof(uint64(i), 0, nil, leaves)
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyInclusion(uint64(i), uint64(n), leaves[i], ip, log.Root()); err != nil {
				t.Fatalf("inclusion %d in %d: %v", i, n, err)
			}
			if err := VerifyInclusion(uint64(i), uint64(n), leaf(5000), ip, log.Root()); err == nil {
				t.Fatalf("inclusion %d in %d verifies another leaf", i, n)
			}
		}
		// Proofs from a compact range and the leaves after it.
		for m := 0; m <= n; m++ {
			r, _ := ResumeMerkleLog(0, nil, leaves[:m])
			for i := m; i < n; i++ {
				ip, err := InclusionProof(uint64(i), uint64(m), r.Range(), leaves[m:])
				if err != nil {
					t.Fatalf("inclusion %d in %d from %d: %v", i, n, m, err)
				}
				if err := VerifyInclusion(uint64(i), uint64(n), leaves[i], ip, log.Root()); err != nil {
					t.Fatalf("inclusion %d in %d from %d: %v", i, n, m, err)
				}
			}
		}
		if n%7 == 0 {
			if r, err := log.RootAt(uint64(n - 3)); err != nil || !bytes.Equal(r, RootOf(leaves[:n-3])) {
				t.Fatalf("root at %d: %v", n-3, err)
			}
			if err := log.MarkAt(uint64(n - 3)); err != nil {
				t.Fatal(err)
			}
			// Resuming from the mark gives the same log.
			r, err := ResumeMerkleLog(log.MarkSize(), log.Frontier(), log.Since())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(r.Root(), log.Root()) || r.Size() != log.Size() {
				t.Fatalf("resumed log differs at %d", n)
			}
			log = r
		}
	}
}

func TestCheckpointSignature(t *testing.T) {
	pub, priv := testKey(t)
	otherPub, other := testKey(t)
	s, err := NewNoteSigner("bastion-1", priv)
	if err != nil {
		t.Fatal(err)
	}
	head := TreeHead{Origin: "bastion-1", Size: 3, Root: RootOf([][]byte{leaf(1), leaf(2), leaf(3)})}
	n, err := SignTreeHead(s, head)
	if err != nil {
		t.Fatal(err)
	}
	got, err := OpenTreeHead(n, "bastion-1", pub)
	if err != nil || got.Size != 3 || !bytes.Equal(got.Root, head.Root) {
		t.Fatalf("open: %+v, %v", got, err)
	}
	if _, err := OpenTreeHead(n, "bastion-1", otherPub); err == nil {
		t.Error("checkpoint verifies under another key")
	}
	// Another agent's checkpoint, signed with its own key and origin.
	s2, _ := NewNoteSigner("bastion-2", other)
	n2, _ := SignTreeHead(s2, TreeHead{Origin: "bastion-2", Size: 3, Root: head.Root})
	if _, err := OpenTreeHead(n2, "bastion-1", pub); err == nil {
		t.Error("another host's checkpoint verifies as bastion-1's")
	}
	// Origin and key name must agree.
	n3, _ := SignTreeHead(s, TreeHead{Origin: "bastion-2", Size: 3, Root: head.Root})
	if _, err := OpenTreeHead(n3, "bastion-1", pub); err == nil || !strings.Contains(err.Error(), "origin") {
		t.Errorf("checkpoint with another origin: %v", err)
	}
	tampered := strings.Replace(n, "\n3\n", "\n2\n", 1)
	if _, err := OpenTreeHead(tampered, "bastion-1", pub); err == nil {
		t.Error("a checkpoint with an edited size verifies")
	}
}

package mysql

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"io"
	"reflect"
	"testing"
)

func TestPacketsOver16MiBAndSequenceIDs(t *testing.T) {
	for _, n := range []int{0, 1, MaxPayload - 1, MaxPayload, MaxPayload + 1, 2 * MaxPayload} {
		var buf bytes.Buffer
		w := NewWriter(&buf)
		w.Seq = 3
		payload := bytes.Repeat([]byte{'x'}, n)
		if err := w.Write(payload); err != nil {
			t.Fatal(err)
		}
		if err := w.Write([]byte("next")); err != nil {
			t.Fatal(err)
		}
		w.Flush()
		physical := n/MaxPayload + 1
		if want := byte(3 + physical + 1); w.Seq != want {
			t.Fatalf("n=%d: next seq %d, want %d", n, w.Seq, want)
		}
		r := NewReader(&buf)
		seq, got, err := r.Next()
		if err != nil || seq != 3 || !bytes.Equal(got, payload) {
			t.Fatalf("n=%d: seq %d len %d err %v", n, seq, len(got), err)
		}
		if r.Seq != byte(3+physical-1) {
			t.Fatalf("n=%d: last physical seq %d", n, r.Seq)
		}
		seq, got, err = r.Next()
		if err != nil || seq != byte(3+physical) || string(got) != "next" {
			t.Fatalf("n=%d: second packet seq %d %q %v", n, seq, got, err)
		}
		if _, _, err := r.Next(); err != io.EOF {
			t.Fatalf("n=%d: want EOF, got %v", n, err)
		}
	}
}

func TestTruncatedPacket(t *testing.T) {
	r := NewReader(bytes.NewReader([]byte{5, 0, 0, 0, 'a', 'b'}))
	if _, _, err := r.Next(); err == nil {
		t.Fatal("truncated packet read without error")
	}
}

func TestHandshakeRoundTrip(t *testing.T) {
	h := &Handshake{ServerVersion: "5.5.5-10.11.6-MariaDB", ConnectionID: 42,
		AuthData:     []byte("abcdefghijklmnopqrst"),
		Capabilities: ClientProtocol41 | ClientSecureConnection | ClientPluginAuth | ClientSSL | ClientDeprecateEOF,
		Charset:      45, Status: StatusAutocommit, AuthPlugin: PluginNative, MariaDBCaps: 0x1c}
	got, err := ParseHandshake(h.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, h) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, h)
	}
	if _, err := ParseHandshake([]byte{9, 'x', 0}); err == nil {
		t.Fatal("protocol 9 accepted")
	}
	e := (&ERR{Code: 1130, State: "HY000", Message: "Host is not allowed"}).Encode()
	if _, err := ParseHandshake(e); err == nil {
		t.Fatal("ERR as handshake accepted")
	} else if _, ok := err.(*ERR); !ok {
		t.Fatalf("want *ERR, got %T", err)
	}
}

func TestHandshakeResponseRoundTrip(t *testing.T) {
	for _, caps := range []uint32{
		ClientProtocol41 | ClientSecureConnection | ClientPluginAuth | ClientConnectWithDB | ClientConnectAttrs | ClientPluginAuthLenenc | ClientLongPassword,
		ClientProtocol41 | ClientSecureConnection,
		ClientProtocol41,
	} {
		r := &HandshakeResponse{Capabilities: caps, MaxPacket: 1 << 24, Charset: 33, User: "app",
			AuthResponse: []byte{1, 2, 3}}
		if caps&ClientConnectWithDB != 0 {
			r.Database = "shop"
		}
		if caps&ClientPluginAuth != 0 {
			r.AuthPlugin = PluginNative
		}
		if caps&ClientConnectAttrs != 0 {
			r.Attrs = []Attr{{"_client_name", "libmariadb"}, {"warden", "alice"}}
		}
		if caps&ClientLongPassword == 0 {
			r.MariaDBCaps = 4
		}
		if caps&(ClientSecureConnection|ClientPluginAuthLenenc) == 0 {
			r.AuthResponse = []byte("pw")
		}
		got, err := ParseHandshakeResponse(r.Encode())
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, r)
		}
	}
	ssl, err := ParseHandshakeResponse(SSLRequestFor(&HandshakeResponse{Capabilities: ClientProtocol41, User: "x"}))
	if err != nil || !ssl.SSLRequest || ssl.Capabilities&ClientSSL == 0 {
		t.Fatalf("SSLRequest: %+v %v", ssl, err)
	}
	if _, err := ParseHandshakeResponse(make([]byte, 32)); err == nil {
		t.Fatal("pre-4.1 response accepted")
	}
}

func TestOKAndERR(t *testing.T) {
	for _, caps := range []uint32{ClientProtocol41, ClientProtocol41 | ClientSessionTrack} {
		ok := &OK{AffectedRows: 300, LastInsertID: 70000, Status: StatusAutocommit | StatusMoreResultsExists, Warnings: 1, Info: "Rows matched: 1"}
		got, err := ParseOK(ok.Encode(HeaderOK, caps), caps)
		if err != nil || !reflect.DeepEqual(got, ok) {
			t.Fatalf("caps %x: %+v %v", caps, got, err)
		}
		if EOFStatus(ok.Encode(HeaderEOF, caps|ClientDeprecateEOF), caps|ClientDeprecateEOF) != ok.Status {
			t.Fatal("status of an OK ending a result set")
		}
	}
	tracked := &OK{Status: StatusSessionChanged, SessionState: []byte{0, 5, 3, 'a', 'b', 'c', 0}}
	if got, err := ParseOK(tracked.Encode(HeaderOK, ClientProtocol41|ClientSessionTrack), ClientProtocol41|ClientSessionTrack); err != nil || !bytes.Equal(got.SessionState, tracked.SessionState) {
		t.Fatalf("session state: %+v %v", got, err)
	}
	e := &ERR{Code: 1142, State: "42000", Message: "warden: DROP denied"}
	got, err := ParseERR(e.Encode(), ClientProtocol41)
	if err != nil || !reflect.DeepEqual(got, e) {
		t.Fatalf("ERR: %+v %v", got, err)
	}
	if EOFStatus(EOF(0, StatusCursorExists), ClientProtocol41) != StatusCursorExists || !IsEOF(EOF(0, 0)) {
		t.Fatal("EOF status")
	}
	big := append([]byte{0xfe}, make([]byte, 0xffffff)...)
	if IsEOF(big) {
		t.Fatal("a row starting with an 8-byte length read as EOF")
	}
}

func TestRows(t *testing.T) {
	values := [][]byte{[]byte("alice"), nil, {}, bytes.Repeat([]byte{'z'}, 70000)}
	got, err := DecodeTextRow(AppendTextRow(nil, values), 4)
	if err != nil || !reflect.DeepEqual(got, values) {
		t.Fatalf("text row: %v", err)
	}
	if _, err := DecodeTextRow(AppendTextRow(nil, values), 3); err == nil {
		t.Fatal("text row with too many values accepted")
	}
	cols := []*Column{{Type: TypeLong}, {Type: TypeVarString}, {Type: TypeDatetime}, {Type: TypeNull}, {Type: TypeDouble}, {Type: TypeNewDecimal}, {Type: TypeTiny}}
	bin := [][]byte{{1, 0, 0, 0}, []byte("123-45-6789"), {0xe8, 0x07, 1, 2}, nil, nil, []byte("1.50"), {7}}
	row := AppendBinaryRow(nil, cols, bin)
	got, err = DecodeBinaryRow(row, cols)
	if err != nil || !reflect.DeepEqual(got, bin) {
		t.Fatalf("binary row: %q %v", got, err)
	}
	if _, err := DecodeBinaryRow(row[:len(row)-1], cols); err == nil {
		t.Fatal("short binary row accepted")
	}
	c := &Column{Schema: "shop", Table: "c", OrgTable: "customers", Name: "e", OrgName: "email", Charset: 45, Length: 400, Type: TypeVarString}
	gc, err := ParseColumn(c.Encode())
	if err != nil || !reflect.DeepEqual(gc, c) {
		t.Fatalf("column: %+v %v", gc, err)
	}
}

func TestNativePasswordVerifies(t *testing.T) {
	scramble := []byte("0123456789abcdefghij")
	resp := NativePassword(scramble, "s3cret")
	// The server's check: SHA1(scramble + stored) XOR resp = SHA1(pw),
	// and SHA1 of that is stored.
	h1 := sha1.Sum([]byte("s3cret"))
	stored := sha1.Sum(h1[:])
	h := sha1.New()
	h.Write(scramble)
	h.Write(stored[:])
	x := h.Sum(nil)
	for i := range x {
		x[i] ^= resp[i]
	}
	if got := sha1.Sum(x); got != stored {
		t.Fatal("native password answer does not verify")
	}
	if len(NativePassword(scramble, "")) != 0 {
		t.Fatal("empty password answers with bytes")
	}
}

func TestCachingSHA2Verifies(t *testing.T) {
	scramble := []byte("0123456789abcdefghij")
	resp := CachingSHA2Password(scramble, "s3cret")
	m1 := sha256.Sum256([]byte("s3cret"))
	stored := sha256.Sum256(m1[:])
	h := sha256.New()
	h.Write(stored[:])
	h.Write(scramble)
	x := h.Sum(nil)
	for i := range x {
		x[i] ^= resp[i]
	}
	if got := sha256.Sum256(x); got != stored {
		t.Fatal("caching_sha2 answer does not verify")
	}
}

func TestEncryptPassword(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	scramble := []byte("0123456789abcdefghij")
	ct, err := EncryptPassword(pubPEM, scramble, "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	plain, err := rsa.DecryptOAEP(sha1.New(), nil, key, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range plain {
		plain[i] ^= scramble[i%len(scramble)]
	}
	if string(plain) != "s3cret\x00" {
		t.Fatalf("decrypted %q", plain)
	}
	if _, err := EncryptPassword([]byte("not pem"), scramble, "x"); err == nil {
		t.Fatal("garbage key accepted")
	}
}

func TestEd25519MatchesRFC8032ForSeedLengthPasswords(t *testing.T) {
	// MariaDB's plugin uses the password where RFC 8032 uses the seed, so
	// for a 32-byte password the answer is the standard signature.
	pw := "0123456789abcdef0123456789abcdef"
	scramble := []byte("a 32-byte scramble from mariadb!")
	got, err := Ed25519Password(scramble, pw)
	if err != nil {
		t.Fatal(err)
	}
	want := ed25519.Sign(ed25519.NewKeyFromSeed([]byte(pw)), scramble)
	if !bytes.Equal(got, want) {
		t.Fatal("signature differs from RFC 8032's")
	}
}

func TestAuthSwitch(t *testing.T) {
	a := &AuthSwitch{Plugin: PluginEd25519, Data: []byte("scramble")}
	got, err := ParseAuthSwitch(a.Encode())
	if err != nil || !reflect.DeepEqual(got, a) {
		t.Fatalf("%+v %v", got, err)
	}
}

func TestDetachKeepsWhatFollows(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.Write([]byte("sslrequest"))
	w.Flush()
	buf.WriteString("client hello")
	r := NewReader(&buf)
	if _, p, err := r.Next(); err != nil || string(p) != "sslrequest" {
		t.Fatalf("%q %v", p, err)
	}
	rest := append(r.Detach(), buf.Bytes()...)
	if string(rest) != "client hello" {
		t.Fatalf("after the packet: %q", rest)
	}
	if r.Buffered() != 0 {
		t.Fatal("Detach left bytes behind")
	}
}

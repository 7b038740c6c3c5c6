package event

// SSHSessionData is the data of an ssh.session event. The codec emits one at
// the start of an SSH connection through the proxy (Phase "start", or a
// refused one with a deny decision) and one at its end, which carries the
// recording's object name, sha256 and size, so the signed chain vouches
// for the recording.
type SSHSessionData struct {
	// Phase is "start" or "end".
	Phase string
	// SSHSession names the SSH connection; it is also the recording's
	// object name, what `warden replay` takes.
	SSHSession string
	// RemoteUser is the account logged in to upstream.
	RemoteUser string
	// Auth says how the proxy logged in upstream: user_ca, key,
	// password (vaulted) or passthrough.
	Auth string
	// DurationMS, BytesIn (from the client) and BytesOut (to it) are set
	// at the end.
	DurationMS        int64
	BytesIn, BytesOut int64
	// Recording is the recording's object name ("" when nothing was
	// recorded), RecordingSHA256 its hex sha256 and RecordingBytes its
	// size; RecordingLost counts bytes not stored.
	Recording       string
	RecordingSHA256 string
	RecordingBytes  int64
	RecordingLost   int64
	// Error says why the session was refused or ended abnormally.
	Error string
}

// Data implements Payload.
func (s SSHSessionData) Data() map[string]any {
	d := map[string]any{"phase": s.Phase, "ssh_session": s.SSHSession}
	setString(d, "remote_user", s.RemoteUser)
	setString(d, "auth", s.Auth)
	setString(d, "error", s.Error)
	if s.Phase == "end" {
		d["duration_ms"] = s.DurationMS
		d["bytes_in"] = s.BytesIn
		d["bytes_out"] = s.BytesOut
	}
	if s.Recording != "" {
		d["recording"] = map[string]any{"object": s.Recording, "sha256": s.RecordingSHA256, "bytes": s.RecordingBytes, "lost": s.RecordingLost}
	}
	return d
}

// SSHExecData is the data of an ssh.exec event: one exec request, recorded
// with the decision on it before it reaches the target.
type SSHExecData struct {
	SSHSession string
	// Command is the command line, with secrets redacted.
	Command string
	// Programs are the programs the command line runs, as the guardrail
	// matched them.
	Programs   []string
	RemoteUser string
	// Kind is "exec", or "scp" / "rsync" for file transfers.
	Kind string
}

// Data implements Payload.
func (x SSHExecData) Data() map[string]any {
	d := map[string]any{"command": x.Command, "ssh_session": x.SSHSession}
	if x.Programs != nil {
		d["programs"] = x.Programs
	}
	setString(d, "remote_user", x.RemoteUser)
	setString(d, "kind", x.Kind)
	return d
}

// SSHSFTPData is the data of an ssh.sftp event: one file operation.
type SSHSFTPData struct {
	SSHSession string
	// Op is the SFTP operation: open, read, write, remove, rename, mkdir,
	// rmdir, setstat, symlink.
	Op string
	// Path is the file's path; Target is the new path of a rename or a
	// symlink's target.
	Path, Target string
	// Bytes counts bytes read or written, at the close of the file.
	Bytes int64
	// Status is the server's answer: "ok" or its SFTP status name.
	Status string
}

// Data implements Payload.
func (x SSHSFTPData) Data() map[string]any {
	d := map[string]any{"ssh_session": x.SSHSession, "op": x.Op, "path": x.Path}
	setString(d, "target", x.Target)
	setString(d, "status", x.Status)
	if x.Op == "read" || x.Op == "write" {
		d["bytes"] = x.Bytes
	}
	return d
}

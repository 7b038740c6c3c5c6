package idtoken

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// deviceScopes are requested by DeviceLogin. "groups" is what Dex and Okta
// need to put groups in the ID token; IdPs that reject it get a second try
// without it (see DeviceLogin).
var deviceScopes = []string{oidc.ScopeOpenID, "profile", "email", "groups"}

// DeviceLogin runs the OAuth 2.0 device authorization grant (RFC 8628)
// against issuer as the public client clientID and returns the ID token the
// IdP issues. It finds the endpoints by OIDC discovery
// (device_authorization_endpoint), prints the verification URL and the user
// code to prompt, and polls at the interval the IdP asks for until the user
// approves, denies, the code expires or ctx is done. caFile is an optional
// PEM bundle for a private IdP CA, as in [Config].
//
// The returned token is not verified here; the agent verifies it.
func DeviceLogin(ctx context.Context, issuer, clientID string, caFile string, prompt io.Writer) (rawIDToken string, err error) {
	if err := CheckIssuerURL(issuer); err != nil {
		return "", fmt.Errorf("device login: %w", err)
	}
	if clientID == "" {
		return "", errors.New("device login: client id is required")
	}
	if prompt == nil {
		return "", errors.New("device login: no prompt writer to show the verification URL on")
	}
	client, err := newHTTPClient(caFile)
	if err != nil {
		return "", fmt.Errorf("device login: CA file: %w", err)
	}
	// oidc.ClientContext sets the key x/oauth2 reads too, so discovery,
	// device authorization and polling all use client.
	ctx = oidc.ClientContext(ctx, client)

	provider, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		return "", fmt.Errorf("device login: discover %q: %s", issuer, clip(err.Error(), 300))
	}
	var meta struct {
		DeviceAuthURL string `json:"device_authorization_endpoint"`
	}
	if err := provider.Claims(&meta); err != nil {
		return "", fmt.Errorf("device login: decode discovery document of %q: %w", issuer, err)
	}
	if meta.DeviceAuthURL == "" {
		return "", fmt.Errorf("device login: issuer %q does not advertise a device_authorization_endpoint; enable the device flow for client %q at the IdP, or log in with --token-file", issuer, clientID)
	}
	ep := provider.Endpoint()
	cfg := &oauth2.Config{
		ClientID: clientID,
		Endpoint: oauth2.Endpoint{
			AuthURL:       ep.AuthURL,
			TokenURL:      ep.TokenURL,
			DeviceAuthURL: meta.DeviceAuthURL,
			// A public client has no secret: send client_id in the form
			// rather than probing with an empty Basic auth header.
			AuthStyle: oauth2.AuthStyleInParams,
		},
		Scopes: slices.Clone(deviceScopes),
	}

	da, err := cfg.DeviceAuth(ctx)
	if rerr, ok := errors.AsType[*oauth2.RetrieveError](err); ok && rerr.ErrorCode == "invalid_scope" {
		// Some IdPs (Azure AD, say) reject scopes they do not know. Groups
		// then have to come from the IdP's claim mapping instead.
		cfg.Scopes = slices.DeleteFunc(cfg.Scopes, func(s string) bool { return s == "groups" })
		da, err = cfg.DeviceAuth(ctx)
	}
	if err != nil {
		return "", fmt.Errorf("device login: start device authorization at %s: %s", meta.DeviceAuthURL, oauthErrText(err))
	}
	if da.VerificationURI == "" || da.UserCode == "" || da.DeviceCode == "" {
		return "", fmt.Errorf("device login: the IdP's device authorization response lacks verification_uri, user_code or device_code")
	}

	if da.VerificationURIComplete != "" {
		fmt.Fprintf(prompt, "To log in, open this URL in a browser:\n\n    %s\n\nor go to %s and enter the code:\n\n    %s\n\n", da.VerificationURIComplete, da.VerificationURI, da.UserCode)
	} else {
		fmt.Fprintf(prompt, "To log in, go to %s in a browser and enter the code:\n\n    %s\n\n", da.VerificationURI, da.UserCode)
	}
	fmt.Fprintln(prompt, "Waiting for approval...")

	tok, err := cfg.DeviceAccessToken(ctx, da)
	if err != nil {
		if rerr, ok := errors.AsType[*oauth2.RetrieveError](err); ok {
			switch rerr.ErrorCode {
			case "access_denied":
				return "", errors.New("device login: the login was denied at the identity provider")
			case "expired_token":
				return "", errors.New("device login: the code expired before it was approved; run the login again")
			}
		}
		if ctx.Err() != nil {
			return "", fmt.Errorf("device login: gave up waiting for approval: %w", ctx.Err())
		}
		// x/oauth2 bounds polling by the code's expires_in with a deadline
		// of its own; hitting it means the code expired unapproved.
		if errors.Is(err, context.DeadlineExceeded) && !da.Expiry.IsZero() {
			return "", errors.New("device login: the code expired before it was approved; run the login again")
		}
		return "", fmt.Errorf("device login: polling the token endpoint: %s", oauthErrText(err))
	}
	idTok, _ := tok.Extra("id_token").(string)
	if idTok == "" {
		return "", fmt.Errorf("device login: the IdP's token response has no id_token; check that client %q may use the \"openid\" scope", clientID)
	}
	return idTok, nil
}

// oauthErrText describes an x/oauth2 error without echoing response bodies
// wholesale: an error body is not supposed to hold secrets, but a broken
// proxy's HTML page is no use to the user either.
func oauthErrText(err error) string {
	if rerr, ok := errors.AsType[*oauth2.RetrieveError](err); ok && rerr.ErrorCode != "" {
		s := rerr.ErrorCode
		if rerr.ErrorDescription != "" {
			s += ": " + clip(rerr.ErrorDescription, 200)
		}
		return s
	}
	return clip(err.Error(), 300)
}

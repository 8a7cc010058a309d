package config

import (
	"errors"
	"io/fs"
	"os"
)

// Env looks up an environment variable: os.LookupEnv in production, a map
// in tests. A nil Env is an empty environment. Only GOTUNNEL_TOKEN and
// GOTUNNEL_ADMIN_TOKEN are read.
type Env func(key string) (string, bool)

// TokenEnv names the environment variable that overrides token.
const TokenEnv = "GOTUNNEL_TOKEN"

// AdminTokenEnv names the environment variable that overrides admin.token.
const AdminTokenEnv = "GOTUNNEL_ADMIN_TOKEN"

// tokenHint ends the message about a missing token.
const tokenHint = "set it in the file or " + TokenEnv

// tokenFromEnv returns GOTUNNEL_TOKEN when it is set and not empty, else
// the token from the file.
func tokenFromEnv(env Env, fileToken string) string { return fromEnv(env, TokenEnv, fileToken) }

// adminTokenFromEnv is tokenFromEnv for admin.token and AdminTokenEnv.
func adminTokenFromEnv(env Env, fileToken string) string {
	return fromEnv(env, AdminTokenEnv, fileToken)
}

func fromEnv(env Env, key, fileValue string) string {
	if env == nil {
		return fileValue
	}
	if v, ok := env(key); ok && v != "" {
		return v
	}
	return fileValue
}

// readFile reads a configuration file; a failure is an Errors naming the
// file, which wraps the cause (errors.Is(err, fs.ErrNotExist) works).
func readFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		return data, nil
	}
	msg := err.Error()
	var pe *fs.PathError
	if errors.As(err, &pe) {
		msg = pe.Err.Error()
	}
	return nil, Errors{{File: path, Msg: "cannot read: " + msg, err: err}}
}

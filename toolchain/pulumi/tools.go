//go:build tools

// Package tools pins the upstream main package so `go mod tidy` keeps its
// dependencies; the binary is built with `go build <package>` in this module.
package tools

import _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"

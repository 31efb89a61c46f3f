//go:build tools

// Package tools records the protoc plugins as module dependencies so their
// versions are pinned by go.mod/go.sum.
package tools

import (
	_ "google.golang.org/grpc/cmd/protoc-gen-go-grpc"
	_ "google.golang.org/protobuf/cmd/protoc-gen-go"
)

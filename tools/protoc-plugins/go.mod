// Pins the protoc plugins that check proto/ compiles for Go (scripts/check-proto-go.sh).
module github.com/shakedown-dev/shakedown/tools/protoc-plugins

go 1.24

require (
	google.golang.org/grpc/cmd/protoc-gen-go-grpc v1.5.1
	google.golang.org/protobuf v1.36.6
)

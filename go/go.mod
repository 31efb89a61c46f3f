// The Go SDK of the Shakedown agent protocol: generated stubs (gen/), scheme-v2
// signing (signing/) and a dialling, signing, retrying client (agentclient/).
module github.com/shakedown-dev/shakedown/go

go 1.26.0

require (
	google.golang.org/grpc v1.84.0
	google.golang.org/protobuf v1.36.11
)

require (
	golang.org/x/net v0.57.0 // indirect
	golang.org/x/sys v0.47.0 // indirect
	golang.org/x/text v0.40.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260706201446-f0a921348800 // indirect
)

package agentclient

import (
	"fmt"

	"google.golang.org/protobuf/proto"
)

// signedBody is a request already serialized and signed: the codec sends its
// bytes as they are, so the agent verifies exactly what was signed.
type signedBody struct{ b []byte }

// codec is the proto codec, except that a signedBody passes through untouched.
type codec struct{}

func (codec) Name() string { return "proto" }

func (codec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case *signedBody:
		return m.b, nil
	case proto.Message:
		return proto.Marshal(m)
	}
	return nil, fmt.Errorf("agentclient codec: cannot marshal %T", v)
}

func (codec) Unmarshal(data []byte, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("agentclient codec: cannot unmarshal into %T", v)
	}
	return proto.Unmarshal(data, m)
}

func marshal(v any) ([]byte, error) { return codec{}.Marshal(v) }

package agentclient

import (
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// FieldMetadata is the trailer in which the agent names the offending field.
const FieldMetadata = "x-shakedown-field"

// ImageField is the field an image pull failure names, which sets it apart
// from other FailedPrecondition errors (as the Python ImagePullError does).
const ImageField = "spec.image"

// Error is an agent's answer other than OK: its status code, the field it
// names (if any) and its message. errors.Is matches the sentinel of its kind.
type Error struct {
	Code    codes.Code
	Field   string
	Message string
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s: %s", e.Code, e.Field, e.Message)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// GRPCStatus lets status.FromError see through an Error.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.Code, e.Message) }

// Is matches the sentinel of e's code (ErrImagePull for a pull failure).
func (e *Error) Is(target error) bool {
	if target == ErrImagePull {
		return e.Code == codes.FailedPrecondition && e.Field == ImageField
	}
	k, ok := target.(kind)
	return ok && k.code == e.Code
}

type kind struct {
	code codes.Code
	name string
}

func (k kind) Error() string { return k.name }

// One sentinel per status code, named as the Python shakedown.errors types are.
var (
	ErrCancelled          error = kind{codes.Canceled, "cancelled"}
	ErrInvalidArgument    error = kind{codes.InvalidArgument, "invalid argument"}
	ErrDeadlineExceeded   error = kind{codes.DeadlineExceeded, "deadline exceeded"}
	ErrNotFound           error = kind{codes.NotFound, "not found"}
	ErrAlreadyExists      error = kind{codes.AlreadyExists, "already exists"}
	ErrPolicy             error = kind{codes.PermissionDenied, "refused by policy or role"}
	ErrResourceExhausted  error = kind{codes.ResourceExhausted, "resource exhausted"}
	ErrFailedPrecondition error = kind{codes.FailedPrecondition, "failed precondition"}
	ErrImagePull          error = kind{codes.FailedPrecondition, "image pull failed"}
	ErrAborted            error = kind{codes.Aborted, "aborted"}
	ErrOutOfRange         error = kind{codes.OutOfRange, "out of range"}
	ErrUnimplemented      error = kind{codes.Unimplemented, "unimplemented"}
	ErrInternal           error = kind{codes.Internal, "internal error"}
	ErrUnavailable        error = kind{codes.Unavailable, "unavailable"}
	ErrDataLoss           error = kind{codes.DataLoss, "data loss"}
	ErrAuth               error = kind{codes.Unauthenticated, "not authenticated"}
	ErrUnknown            error = kind{codes.Unknown, "unknown error"}
)

// fromStatus turns a gRPC error into an *Error; nil, io.EOF and non-status
// errors pass through unchanged.
func fromStatus(err error, trailer metadata.MD) error {
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	var typed *Error
	if errors.As(err, &typed) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	e := &Error{Code: st.Code(), Message: st.Message()}
	if v := trailer.Get(FieldMetadata); len(v) > 0 {
		e.Field = v[0]
		prefix := e.Field + ": "
		if len(e.Message) > len(prefix) && e.Message[:len(prefix)] == prefix {
			e.Message = e.Message[len(prefix):]
		}
	}
	return e
}

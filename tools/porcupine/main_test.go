package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/anishathalye/porcupine"
)

func check(t *testing.T, lines string) porcupine.CheckResult {
	t.Helper()
	path := filepath.Join(t.TempDir(), "history.jsonl")
	if err := os.WriteFile(path, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	ops, _, err := parse(path)
	if err != nil {
		t.Fatal(err)
	}
	return porcupine.CheckOperationsTimeout(model, ops, 0)
}

const ackedWrite = `{"index":0,"type":"invoke","process":0,"f":"apply","key":"w","value":{"b":1,"a":2}}
{"index":1,"type":"ok","process":0,"f":"apply","key":"w","value":null}
`

func TestReadOfAnAcknowledgedWrite(t *testing.T) {
	// key order differs: values compare as canonical JSON
	h := ackedWrite + `{"index":2,"type":"invoke","process":1,"f":"get","key":"w","value":null}
{"index":3,"type":"ok","process":1,"f":"get","key":"w","value":{"a":2,"b":1}}
`
	if got := check(t, h); got != porcupine.Ok {
		t.Fatalf("got %v, want Ok", got)
	}
}

func TestLostWriteIsIllegal(t *testing.T) {
	h := ackedWrite + `{"index":2,"type":"invoke","process":1,"f":"get","key":"w","value":null}
{"index":3,"type":"ok","process":1,"f":"get","key":"w","value":null}
`
	if got := check(t, h); got != porcupine.Illegal {
		t.Fatalf("got %v, want Illegal", got)
	}
}

func TestInfoWriteMayTakeEffectLater(t *testing.T) {
	h := `{"index":0,"type":"invoke","process":0,"f":"update","key":"w","value":5}
{"index":1,"type":"info","process":0,"f":"update","key":"w","value":null}
{"index":2,"type":"invoke","process":1,"f":"get","key":"w","value":null}
{"index":3,"type":"ok","process":1,"f":"get","key":"w","value":null}
{"index":4,"type":"invoke","process":1,"f":"get","key":"w","value":null}
{"index":5,"type":"ok","process":1,"f":"get","key":"w","value":5}
{"index":6,"type":"invoke","process":2,"f":"apply","key":"w","value":6}
{"index":7,"type":"invoke","process":1,"f":"get","key":"w","value":null}
{"index":8,"type":"fail","process":1,"f":"get","key":"w","value":null}
`
	if got := check(t, h); got != porcupine.Ok {
		t.Fatalf("got %v, want Ok", got)
	}
}

// Command porcupine checks a Shakedown history.jsonl for linearizability of the workload
// registry with github.com/anishathalye/porcupine, as an independent cross-check of the
// Python checker (driver/fuzz/checkers/linearizable.py).
//
//	porcupine [-timeout 60s] history.jsonl...
//
// For each file it prints one JSON line: {"file", "valid": true|false|"unknown", "keys",
// "operations", "parse_seconds", "check_seconds"}. Exit status 0 unless a file could not be
// read (2). Semantics (the brief's HISTORY format): one register per key, starting absent;
// apply/update/scale write the invoke's value, delete writes null, get reads its ok's value;
// fail is dropped, an info (or never completed) write returns at +infinity, an info get is
// dropped. Times are the events' history indexes.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"time"

	"github.com/anishathalye/porcupine"
)

type event struct {
	Index   int64           `json:"index"`
	Type    string          `json:"type"`
	Process json.RawMessage `json:"process"`
	F       string          `json:"f"`
	Key     *string         `json:"key"`
	Value   json.RawMessage `json:"value"`
}

// input of a register operation; the key is what the model partitions on.
type input struct {
	key   string
	write bool
	value string // canonical JSON of the written value; unused for reads
}

var writes = map[string]bool{"apply": true, "update": true, "scale": true, "delete": true}

// canonical re-encodes JSON so equal values compare equal (maps sort their keys).
func canonical(raw json.RawMessage) (string, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return "null", nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v interface{}
	if err := dec.Decode(&v); err != nil {
		return "", err
	}
	out, err := json.Marshal(v)
	return string(out), err
}

func parse(path string) ([]porcupine.Operation, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	pending := map[string]event{}
	var ops []porcupine.Operation
	keys := map[string]bool{}
	add := func(inv event, retType string, ret event, retIndex int64) error {
		if inv.Key == nil || (!writes[inv.F] && inv.F != "get") || retType == "fail" {
			return nil
		}
		in := input{key: *inv.Key, write: writes[inv.F]}
		var out string
		if in.write {
			in.value = "null"
			if inv.F != "delete" {
				v, err := canonical(inv.Value)
				if err != nil {
					return err
				}
				in.value = v
			}
		} else {
			if retType != "ok" {
				return nil
			}
			v, err := canonical(ret.Value)
			if err != nil {
				return err
			}
			out = v
		}
		if retType != "ok" {
			retIndex = math.MaxInt64
		}
		keys[in.key] = true
		ops = append(ops, porcupine.Operation{Input: in, Call: inv.Index,
			Output: out, Return: retIndex})
		return nil
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var ev event
		if err := json.Unmarshal(line, &ev); err != nil {
			return nil, 0, fmt.Errorf("%s: event: %w", path, err)
		}
		proc := string(ev.Process)
		if ev.Type == "invoke" {
			pending[proc] = ev
			continue
		}
		inv, ok := pending[proc]
		if !ok {
			return nil, 0, fmt.Errorf("%s: event %d completes no invoke", path, ev.Index)
		}
		delete(pending, proc)
		if err := add(inv, ev.Type, ev, ev.Index); err != nil {
			return nil, 0, err
		}
	}
	if err := sc.Err(); err != nil {
		return nil, 0, err
	}
	for _, inv := range pending {
		if err := add(inv, "info", event{}, 0); err != nil {
			return nil, 0, err
		}
	}
	return ops, len(keys), nil
}

var model = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var order []string
		for _, op := range history {
			k := op.Input.(input).key
			if _, seen := byKey[k]; !seen {
				order = append(order, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(order))
		for _, k := range order {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() interface{} { return "null" },
	Step: func(state, in, out interface{}) (bool, interface{}) {
		i := in.(input)
		if i.write {
			return true, i.value
		}
		return out.(string) == state.(string), state
	},
}

func main() {
	timeout := flag.Duration("timeout", 60*time.Second, "give up (valid: unknown) after this long per file")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: porcupine [-timeout 60s] history.jsonl...")
		os.Exit(2)
	}
	enc := json.NewEncoder(os.Stdout)
	for _, path := range flag.Args() {
		t0 := time.Now()
		ops, keys, err := parse(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "porcupine:", err)
			os.Exit(2)
		}
		t1 := time.Now()
		res := porcupine.CheckOperationsTimeout(model, ops, *timeout)
		elapsed := time.Since(t1).Seconds()
		var valid interface{} = "unknown"
		switch res {
		case porcupine.Ok:
			valid = true
		case porcupine.Illegal:
			valid = false
		}
		_ = enc.Encode(map[string]interface{}{"file": path, "valid": valid, "keys": keys,
			"operations": len(ops), "parse_seconds": t1.Sub(t0).Seconds(), "check_seconds": elapsed})
	}
}

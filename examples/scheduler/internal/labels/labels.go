// Package labels is the label convention of workload containers: the one
// place that says how a container on an agent maps back to a replica.
//
// Every container the scheduler creates carries:
//
//	dev.shakedown.scheduler.managed=true      selects all of them (ListContainers, Events)
//	dev.shakedown.scheduler.workload-id=<id>  the workload's id (12 hex digits)
//	dev.shakedown.scheduler.workload=<name>   its name, for people reading `docker ps`
//	dev.shakedown.scheduler.replica=<index>   the replica index, 0..replicas-1
//	dev.shakedown.scheduler.generation=<n>    the generation of the container template it
//	                                          was made from (the last spec change of image,
//	                                          command, env, ports or resources; scaling or a
//	                                          new restart policy recreates nothing)
//
// Keys under "io.shakedown." are reserved by the agent, hence this prefix.
// To find a workload's containers on an agent, list with the selectors
// Managed+"=true" and WorkloadID+"="+id (ListContainersRequest.label_selector).
package labels

import (
	"fmt"
	"strconv"
	"strings"
)

const (
	Prefix     = "dev.shakedown.scheduler."
	Managed    = Prefix + "managed"
	WorkloadID = Prefix + "workload-id"
	Workload   = Prefix + "workload"
	Replica    = Prefix + "replica"
	Generation = Prefix + "generation"
)

// ManagedSelector selects every container of every workload.
const ManagedSelector = Managed + "=true"

// Identity is what the labels say about one container.
type Identity struct {
	WorkloadID string
	Index      int
	Generation int64
}

// For returns the labels of replica index of a workload at a generation.
func For(workloadID, name string, index int, generation int64) map[string]string {
	return map[string]string{
		Managed:    "true",
		WorkloadID: workloadID,
		Workload:   name,
		Replica:    strconv.Itoa(index),
		Generation: strconv.FormatInt(generation, 10),
	}
}

// Merge adds extra to l without overriding any key of l.
func Merge(l, extra map[string]string) map[string]string {
	for k, v := range extra {
		if _, ok := l[k]; !ok {
			l[k] = v
		}
	}
	return l
}

// CheckExtra validates an operator's extra label key: not reserved by the
// agent ("io.shakedown.") nor by this convention.
func CheckExtra(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("label key: must not be empty")
	case strings.HasPrefix(key, "io.shakedown."), strings.HasPrefix(key, Prefix):
		return fmt.Errorf("label key %q: the prefixes io.shakedown. and %s are reserved", key, Prefix)
	}
	return nil
}

// Parse reads the identity back; an error names the label that is missing or bad.
func Parse(l map[string]string) (Identity, error) {
	var id Identity
	if l[Managed] != "true" {
		return id, fmt.Errorf("label %s: not \"true\"", Managed)
	}
	if id.WorkloadID = l[WorkloadID]; id.WorkloadID == "" {
		return id, fmt.Errorf("label %s: missing", WorkloadID)
	}
	idx, err := strconv.Atoi(l[Replica])
	if err != nil || idx < 0 {
		return id, fmt.Errorf("label %s: %q is not a replica index", Replica, l[Replica])
	}
	gen, err := strconv.ParseInt(l[Generation], 10, 64)
	if err != nil || gen < 1 {
		return id, fmt.Errorf("label %s: %q is not a generation", Generation, l[Generation])
	}
	id.Index, id.Generation = idx, gen
	return id, nil
}

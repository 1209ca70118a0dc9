//go:build test_performance

// stoker's half of the identical-input scheduling comparison. hack/bench-scheduling-vs-karpenter.sh
// copies this file into Karpenter's scheduling test package (sigs.k8s.io/karpenter, the version
// pinned in hack/versions.env), so the pods are the ones Karpenter's own benchmark generator draws
// (makeDiversePods, seed 42) and the types are its fake.InstanceTypes(400), not a re-creation.
//
// TestStokerExportInput writes them as JSON; TestStokerSolve runs Karpenter's scheduler over those
// pods on any exported instance-type file (Karpenter's types, or the real catalog stoker writes in
// the same format) and prints one JSON line per size. Both tools therefore solve the same objects.
package scheduling_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/samber/lo"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	fakecr "sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1 "sigs.k8s.io/karpenter/pkg/apis/v1"
	"sigs.k8s.io/karpenter/pkg/cloudprovider"
	"sigs.k8s.io/karpenter/pkg/cloudprovider/fake"
	"sigs.k8s.io/karpenter/pkg/controllers/provisioning/scheduling"
	"sigs.k8s.io/karpenter/pkg/controllers/state"
	"sigs.k8s.io/karpenter/pkg/events"
	"sigs.k8s.io/karpenter/pkg/operator/injection"
	"sigs.k8s.io/karpenter/pkg/operator/options"
	scheduling_reqs "sigs.k8s.io/karpenter/pkg/scheduling"
	"sigs.k8s.io/karpenter/pkg/test"
)

// exportedOffering and exportedType are the interchange format stoker reads and writes
// (benches/support/interchange.rs): requirements as NodePool requirements, resources as quantities.
type exportedOffering struct {
	Zone         string  `json:"zone"`
	CapacityType string  `json:"capacityType"`
	Price        float64 `json:"price"`
	Available    bool    `json:"available"`
}

type exportedType struct {
	Name         string                                    `json:"name"`
	Requirements []v1.NodeSelectorRequirementWithMinValues `json:"requirements"`
	Capacity     corev1.ResourceList                       `json:"capacity"`
	Allocatable  corev1.ResourceList                       `json:"allocatable"`
	Offerings    []exportedOffering                        `json:"offerings"`
}

func headToHeadDir(t *testing.T) string {
	dir := os.Getenv("STOKER_H2H_DIR")
	if dir == "" {
		t.Skip("STOKER_H2H_DIR is not set (hack/bench-scheduling-vs-karpenter.sh sets it)")
	}
	return dir
}

func headToHeadSizes(t *testing.T) []int {
	var sizes []int
	for _, field := range strings.Fields(os.Getenv("STOKER_H2H_SIZES")) {
		size, err := strconv.Atoi(field)
		if err != nil || size < 1 {
			t.Fatalf("STOKER_H2H_SIZES: %q is not a pod count", field)
		}
		sizes = append(sizes, size)
	}
	if len(sizes) == 0 {
		t.Fatal("STOKER_H2H_SIZES is empty")
	}
	return sizes
}

func writeJSON(t *testing.T, path string, value any) {
	data, err := json.Marshal(value)
	if err != nil {
		t.Fatalf("encoding %s: %s", path, err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatalf("writing %s: %s", path, err)
	}
}

func readJSON(t *testing.T, path string, value any) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %s", path, err)
	}
	if err := json.Unmarshal(data, value); err != nil {
		t.Fatalf("decoding %s: %s", path, err)
	}
}

func TestStokerExportInput(t *testing.T) {
	dir := headToHeadDir(t)
	for _, size := range headToHeadSizes(t) {
		// Karpenter's benchmark runs one size per process (-bench BenchmarkSchedulingN), so each
		// size's pods are the first draw from a fresh seed 42.
		r = rand.New(rand.NewSource(42)) //nolint:gosec
		writeJSON(t, filepath.Join(dir, fmt.Sprintf("pods-%d.json", size)), makeDiversePods(size))
	}
	var types []exportedType
	for _, it := range fake.InstanceTypes(400) {
		exported := exportedType{
			Name:         it.Name,
			Requirements: it.Requirements.NodeSelectorRequirements(),
			Capacity:     it.Capacity,
			Allocatable:  it.Allocatable(),
		}
		for _, offering := range it.Offerings {
			exported.Offerings = append(exported.Offerings, exportedOffering{
				Zone: offering.Zone(), CapacityType: offering.CapacityType(), Price: offering.Price, Available: offering.Available,
			})
		}
		types = append(types, exported)
	}
	writeJSON(t, filepath.Join(dir, "types-karpenter.json"), types)
}

// importTypes turns an exported file back into Karpenter's instance types: what capacity exceeds
// allocatable by is the type's overhead (kube-reserved), so Karpenter computes the same allocatable.
func importTypes(t *testing.T, path string) []*cloudprovider.InstanceType {
	var exported []exportedType
	readJSON(t, path, &exported)
	var types []*cloudprovider.InstanceType
	for _, e := range exported {
		overhead := corev1.ResourceList{}
		for name, capacity := range e.Capacity {
			reserved := capacity.DeepCopy()
			if allocatable, ok := e.Allocatable[name]; ok {
				reserved.Sub(allocatable)
			}
			if reserved.Sign() > 0 {
				overhead[name] = reserved
			}
		}
		var offerings cloudprovider.Offerings
		for _, o := range e.Offerings {
			offerings = append(offerings, &cloudprovider.Offering{
				Requirements: scheduling_reqs.NewLabelRequirements(map[string]string{
					v1.CapacityTypeLabelKey: o.CapacityType, corev1.LabelTopologyZone: o.Zone,
				}),
				Price:     o.Price,
				Available: o.Available,
			})
		}
		// Karpenter's providers give every type the zones and capacity types of its available
		// offerings as requirements (its topology finds zone domains there); stoker keeps them on
		// the offerings alone.
		requirements := scheduling_reqs.NewNodeSelectorRequirementsWithMinValues(e.Requirements...)
		for _, key := range []string{corev1.LabelTopologyZone, v1.CapacityTypeLabelKey} {
			if !requirements.Has(key) {
				values := lo.Uniq(lo.Map(offerings.Available(), func(o *cloudprovider.Offering, _ int) string {
					return o.Requirements.Get(key).Any()
				}))
				requirements.Add(scheduling_reqs.NewRequirement(key, corev1.NodeSelectorOpIn, values...))
			}
		}
		types = append(types, &cloudprovider.InstanceType{
			Name:         e.Name,
			Requirements: requirements,
			Offerings:    offerings,
			Capacity:     e.Capacity,
			Overhead:     &cloudprovider.InstanceTypeOverhead{KubeReserved: overhead},
		})
	}
	return types
}

// newScheduler is the benchmark's own setup (one NodePool without requirements, no existing
// nodes) over the given instance types, without limits as stoker's side has none. The
// benchmark's limits (10^7 CPU and 10^7 Gi) never bind on its own types, but Karpenter counts
// every NodeClaim at its largest option, and on the real catalog (32 TiB types) they stopped it
// at 335 nodes.
func newScheduler(ctx context.Context, t *testing.T, pods []*corev1.Pod, instanceTypes []*cloudprovider.InstanceType) *scheduling.Scheduler {
	nodePool := test.NodePool()
	nodePool.Spec.Limits = v1.Limits{} // test.NodePool's default is 2000 CPU
	provider := fake.NewCloudProvider()
	provider.InstanceTypes = instanceTypes
	client := fakecr.NewFakeClient()
	realClock := &clock.RealClock{}
	cluster := state.NewCluster(realClock, client, provider)
	byPool := map[string][]*cloudprovider.InstanceType{nodePool.Name: instanceTypes}
	opts := []scheduling.Options{scheduling.NumConcurrentReconciles(5)}
	topology, err := scheduling.NewTopology(ctx, client, cluster, nil, []*v1.NodePool{nodePool}, byPool, pods, opts...)
	if err != nil {
		t.Fatalf("creating topology: %s", err)
	}
	return scheduling.NewScheduler(ctx, client, []*v1.NodePool{nodePool}, cluster, nil, topology, byPool, nil,
		events.NewRecorder(&record.FakeRecorder{}), realClock, nil, nil, opts...)
}

// cheapest is what a NodeClaim costs: its cheapest available offering compatible with its
// requirements, over the instance types it may launch as.
func cheapest(claim *scheduling.NodeClaim) float64 {
	price := math.Inf(1)
	for _, it := range claim.InstanceTypeOptions {
		for _, offering := range it.Offerings.Available().Compatible(claim.Requirements) {
			price = math.Min(price, offering.Price)
		}
	}
	return price
}

func TestStokerSolve(t *testing.T) {
	dir := headToHeadDir(t)
	typesFile := os.Getenv("STOKER_H2H_TYPES")
	if typesFile == "" {
		t.Fatal("STOKER_H2H_TYPES is not set")
	}
	runs := 1
	if text := os.Getenv("STOKER_H2H_RUNS"); text != "" {
		parsed, err := strconv.Atoi(text)
		if err != nil || parsed < 1 {
			t.Fatalf("STOKER_H2H_RUNS: %q is not a run count", text)
		}
		runs = parsed
	}
	instanceTypes := importTypes(t, filepath.Join(dir, typesFile))
	for _, size := range headToHeadSizes(t) {
		var pods []*corev1.Pod
		readJSON(t, filepath.Join(dir, fmt.Sprintf("pods-%d.json", size)), &pods)
		var seconds []float64
		var results scheduling.Results
		for range runs {
			ctx := options.ToContext(injection.WithControllerName(context.Background(), "provisioner"), test.Options())
			scheduler := newScheduler(ctx, t, pods, instanceTypes)
			started := time.Now()
			solved, err := scheduler.Solve(ctx, pods)
			seconds = append(seconds, time.Since(started).Seconds())
			if err != nil {
				t.Fatalf("solving %d pods: %s", size, err)
			}
			results = solved
		}
		sort.Float64s(seconds)
		median := seconds[len(seconds)/2]
		cost := 0.0
		for _, claim := range results.NewNodeClaims {
			cost += cheapest(claim)
		}
		// Why pods were left out, each reason once, so a table with unschedulable pods explains itself.
		reasons := map[string]int{}
		for _, err := range results.PodErrors {
			reasons[err.Error()]++
		}
		for reason, count := range reasons {
			fmt.Printf("UNSCHEDULABLE %d pods of %d: %s\n", count, size, reason)
		}
		line, _ := json.Marshal(map[string]any{
			"tool": "karpenter", "types": typesFile, "pods": size, "runs": runs, "seconds": median,
			"pods_per_second": float64(size) / median, "nodes": len(results.NewNodeClaims),
			"cost_per_hour": cost, "unschedulable": len(results.PodErrors),
		})
		fmt.Printf("H2H %s\n", line)
	}
}

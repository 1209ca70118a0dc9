// Karpenter's kwok cloud provider, run as its own kwok binary runs it, with spot capacity refused
// for named instance types: Karpenter's half of the spot scenario of hack/bench-vs-karpenter.sh.
// The script copies this file into the pinned Karpenter module (kwok/refusing/) and builds it.
//
// REFUSED_SPOT_TYPES names a file of instance types (whitespace-separated). A launch is answered
// as EC2's CreateFleet answers one: among the NodeClaim's compatible offerings the refused spot
// ones fail, the cheapest of the others launches (kwok's own choice), and when none is left the
// launch fails with an InsufficientCapacityError. Failed offerings are then reported unavailable
// by GetInstanceTypes for three minutes, as Karpenter's AWS provider caches capacity errors (core
// Karpenter and its kwok provider have no such cache; without it the same offering is chosen
// again). The stoker side of the race gets the same refusals from the EC2 emulator
// (hack/emulator_capacity.py). Without the variable the provider is kwok's, unchanged.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/samber/lo"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/log"

	kwok "sigs.k8s.io/karpenter/kwok/cloudprovider"
	v1 "sigs.k8s.io/karpenter/pkg/apis/v1"
	"sigs.k8s.io/karpenter/pkg/cloudprovider"
	"sigs.k8s.io/karpenter/pkg/cloudprovider/overlay"
	"sigs.k8s.io/karpenter/pkg/controllers"
	"sigs.k8s.io/karpenter/pkg/controllers/node/health"
	"sigs.k8s.io/karpenter/pkg/controllers/state"
	"sigs.k8s.io/karpenter/pkg/operator"
	"sigs.k8s.io/karpenter/pkg/scheduling"
)

// How long a refused offering stays unavailable (the AWS provider's capacity-error TTL).
const unavailableFor = 3 * time.Minute

type refusing struct {
	cloudprovider.CloudProvider
	refused map[string]bool

	mu sync.Mutex
	// Instance types whose spot offerings failed to launch, until when they count as unavailable.
	unavailable map[string]time.Time
}

// GetInstanceTypes marks the spot offerings of recently refused types unavailable, on copies.
func (r *refusing) GetInstanceTypes(ctx context.Context, nodePool *v1.NodePool) ([]*cloudprovider.InstanceType, error) {
	types, err := r.CloudProvider.GetInstanceTypes(ctx, nodePool)
	if err != nil || len(r.refused) == 0 {
		return types, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	return lo.Map(types, func(it *cloudprovider.InstanceType, _ int) *cloudprovider.InstanceType {
		if until, ok := r.unavailable[it.Name]; !ok || now.After(until) {
			return it
		}
		offerings := lo.Map(it.Offerings, func(o *cloudprovider.Offering, _ int) *cloudprovider.Offering {
			if o.CapacityType() != v1.CapacityTypeSpot {
				return o
			}
			unavailable := *o
			unavailable.Available = false
			return &unavailable
		})
		return &cloudprovider.InstanceType{
			Name: it.Name, Requirements: it.Requirements, Offerings: offerings, Capacity: it.Capacity,
			VolumeAttachmentLimits: it.VolumeAttachmentLimits, DynamicResources: it.DynamicResources, Overhead: it.Overhead,
		}
	}), nil
}

// Create launches the cheapest compatible offering that is not refused, narrowing the NodeClaim
// to it for kwok, or fails with an InsufficientCapacityError when every one is refused.
func (r *refusing) Create(ctx context.Context, nodeClaim *v1.NodeClaim) (*v1.NodeClaim, error) {
	if len(r.refused) == 0 {
		return r.CloudProvider.Create(ctx, nodeClaim)
	}
	types, err := r.GetInstanceTypes(ctx, nil)
	if err != nil {
		return nil, err
	}
	requirements := scheduling.NewNodeSelectorRequirementsWithMinValues(nodeClaim.Spec.Requirements...)
	allowed := requirements.Get(corev1.LabelInstanceTypeStable)
	var chosen *cloudprovider.Offering
	var chosenType string
	var failed []string
	for _, it := range types {
		if !allowed.Has(it.Name) {
			continue
		}
		for _, o := range it.Offerings.Available().Compatible(requirements) {
			switch {
			case o.CapacityType() == v1.CapacityTypeSpot && r.refused[it.Name]:
				failed = append(failed, it.Name)
			case chosen == nil || o.Price < chosen.Price:
				chosen, chosenType = o, it.Name
			}
		}
	}
	if len(failed) > 0 {
		failed = lo.Uniq(failed)
		r.mu.Lock()
		for _, name := range failed {
			r.unavailable[name] = time.Now().Add(unavailableFor)
		}
		r.mu.Unlock()
		log.FromContext(ctx).Info("refused spot capacity", "NodeClaim", nodeClaim.Name, "types", len(failed), "launched", chosen != nil)
	}
	if chosen == nil {
		return nil, cloudprovider.NewInsufficientCapacityError(fmt.Errorf("no spot capacity for %s", strings.Join(failed, ", ")))
	}
	narrowed := nodeClaim.DeepCopy()
	narrowed.Spec.Requirements = append(lo.Reject(narrowed.Spec.Requirements, func(req v1.NodeSelectorRequirementWithMinValues, _ int) bool {
		return req.Key == corev1.LabelInstanceTypeStable || req.Key == v1.CapacityTypeLabelKey || req.Key == corev1.LabelTopologyZone
	}),
		v1.NodeSelectorRequirementWithMinValues{Key: corev1.LabelInstanceTypeStable, Operator: corev1.NodeSelectorOpIn, Values: []string{chosenType}},
		v1.NodeSelectorRequirementWithMinValues{Key: v1.CapacityTypeLabelKey, Operator: corev1.NodeSelectorOpIn, Values: []string{chosen.CapacityType()}},
		v1.NodeSelectorRequirementWithMinValues{Key: corev1.LabelTopologyZone, Operator: corev1.NodeSelectorOpIn, Values: []string{chosen.Zone()}},
	)
	return r.CloudProvider.Create(ctx, narrowed)
}

func refusedTypes() map[string]bool {
	path := os.Getenv("REFUSED_SPOT_TYPES")
	if path == "" {
		return nil
	}
	text := lo.Must(os.ReadFile(path))
	return lo.SliceToMap(strings.Fields(string(text)), func(name string) (string, bool) { return name, true })
}

func main() {
	ctx, op := operator.NewOperator()
	instanceTypes, err := kwok.ConstructInstanceTypes(ctx)
	if err != nil {
		log.FromContext(ctx).Error(err, "failed constructing instance types")
	}
	undecorated := &refusing{
		CloudProvider: kwok.NewCloudProvider(ctx, op.GetClient(), instanceTypes),
		refused:       refusedTypes(),
		unavailable:   map[string]time.Time{},
	}
	cloudProvider := overlay.Decorate(undecorated, op.GetClient(), op.InstanceTypeStore)
	repairPolicies := lo.Must(health.NewRepairPolicyMatcher(ctx, cloudProvider))
	cluster := state.NewCluster(op.Clock, op.GetClient(), cloudProvider, state.WithRepairPolicyMatcher(repairPolicies))
	op.WithControllers(ctx, controllers.NewControllers(ctx, op.Manager, op.Clock, op.GetClient(), op.EventRecorder,
		cloudProvider, undecorated, cluster, op.InstanceTypeStore, op.PredictionStore)...).Start(ctx)
}

//! The condition types and statuses stoker's kinds report, as `kubectl wait --for condition=...`
//! and dashboards name them.

/// Every kind: usable now.
pub const READY: &str = "Ready";
/// NodeClaim: its instance runs.
pub const LAUNCHED: &str = "Launched";
/// NodeClaim: its Node joined.
pub const REGISTERED: &str = "Registered";
/// NodeClaim: its Node is Ready with its startup taints gone.
pub const INITIALIZED: &str = "Initialized";
/// NodeClaim: its pods have not changed for its pool's `consolidateAfter`; consolidation may
/// consider it.
pub const CONSOLIDATABLE: &str = "Consolidatable";
/// NodeClaim: it no longer matches its NodePool or EC2NodeClass; it is replaced.
pub const DRIFTED: &str = "Drifted";
/// NodeClaim: its `expireAfter` elapsed; it is being replaced.
pub const EXPIRED: &str = "Expired";
/// NodeClaim: its node stayed NotReady past the repair threshold; it is replaced, undrained.
pub const UNHEALTHY: &str = "Unhealthy";
/// NodePool: its EC2NodeClass exists and is ready.
pub const NODE_CLASS_READY: &str = "NodeClassReady";
/// NodePool: the checks the schema cannot make passed.
pub const VALIDATION_SUCCEEDED: &str = "ValidationSucceeded";
/// WarmPool: its schedule can be evaluated.
pub const SCHEDULE_VALID: &str = "ScheduleValid";
/// WarmPool: the operator's limits allow it.
pub const ADMITTED: &str = "Admitted";

pub const TRUE: &str = "True";
pub const FALSE: &str = "False";

//! `stoker convert -f FILE`: Karpenter v1 manifests → stoker manifests, for moving a cluster.
//!
//! A Karpenter `NodePool` (`karpenter.sh/v1`), `EC2NodeClass` (`karpenter.k8s.aws/v1`) or
//! `NodeOverlay` (`karpenter.sh/v1alpha1`) becomes the stoker resource of the same kind and name:
//! the API group changes, the node class reference points at stoker's EC2NodeClass,
//! server-written metadata and status go, and every field stoker does not have is dropped *with
//! a note naming it* (found by walking the document against the generated CRD's schema, so the
//! list follows the API instead of being kept by hand). The result then goes through `stoker
//! validate`'s checks. Other documents pass through unchanged, with a note where a workload
//! selects nodes by Karpenter's NodePool label, which stoker does not set.

use std::process::ExitCode;

use serde_json::{Map, Value, json};

use super::{
    CliError,
    input::Document,
    validate::{self, Verdict},
};
use crate::apis::{self, labels};

/// Karpenter's API groups, and the label it puts a node's NodePool name in.
const KARPENTER_GROUP: &str = "karpenter.sh";
const KARPENTER_AWS_GROUP: &str = "karpenter.k8s.aws";
const KARPENTER_NODEPOOL_LABEL: &str = "karpenter.sh/nodepool";

/// Metadata the apiserver or kubectl writes; none of it belongs in a manifest for a new object.
const KEPT_METADATA: [&str; 3] = ["name", "labels", "annotations"];
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What became of one document.
#[derive(Debug, PartialEq)]
pub enum Conversion {
    /// A Karpenter resource, now a stoker one. `notes` name what was dropped; `problems` are what
    /// the apiserver would still refuse in the result.
    Converted { document: Value, notes: Vec<String>, problems: Vec<String> },
    /// Not a Karpenter resource: written out as it was.
    Unchanged { document: Value, notes: Vec<String> },
    /// A Karpenter document with no stoker equivalent to write; left out of the output.
    Omitted { reason: String },
    /// A Karpenter document stoker cannot convert; left out of the output and an error.
    Refused { reason: String },
}

/// Converts one document (already parsed from YAML).
pub fn convert_document(document: &Value) -> Conversion {
    let api_version = document.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind = document.get("kind").and_then(Value::as_str).unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let convertible = matches!((group, kind), (KARPENTER_GROUP, "NodePool") | (KARPENTER_AWS_GROUP, "EC2NodeClass"));
    match (group, version, kind) {
        (KARPENTER_GROUP | KARPENTER_AWS_GROUP, "v1", _) if convertible => convert_resource(document, kind),
        // Karpenter's NodeOverlay is still alpha; its fields are stoker's.
        (KARPENTER_GROUP, "v1alpha1", "NodeOverlay") => convert_resource(document, kind),
        (KARPENTER_GROUP, _, "NodeClaim") => {
            Conversion::Omitted { reason: "NodeClaims are created by the controller, not written by hand".into() }
        }
        (KARPENTER_GROUP | KARPENTER_AWS_GROUP, "v1", _) => {
            Conversion::Refused { reason: format!("{api_version} {kind} has no stoker equivalent") }
        }
        (KARPENTER_GROUP | KARPENTER_AWS_GROUP, _, _) => Conversion::Refused {
            reason: format!(
                "{api_version} is not Karpenter v1: upgrade the manifest to v1 first (Karpenter's v1 migration guide), then convert"
            ),
        },
        _ => {
            let notes = if mentions(document, KARPENTER_NODEPOOL_LABEL) {
                vec![format!(
                    "selects nodes by {KARPENTER_NODEPOOL_LABEL}, which stoker does not set: use {} (same value)",
                    labels::NODEPOOL
                )]
            } else {
                Vec::new()
            };
            Conversion::Unchanged { document: document.clone(), notes }
        }
    }
}

fn convert_resource(document: &Value, kind: &str) -> Conversion {
    let mut spec = document.get("spec").cloned().unwrap_or_else(|| json!({}));
    if kind == "NodePool"
        && let Some(reference) = spec.pointer_mut("/template/spec/nodeClassRef").and_then(Value::as_object_mut)
        && reference.get("group").and_then(Value::as_str) == Some(KARPENTER_AWS_GROUP)
    {
        reference.insert("group".into(), json!(labels::GROUP));
    }
    let mut converted = json!({
        "apiVersion": format!("{}/{}", labels::GROUP, labels::VERSION),
        "kind": kind,
        "metadata": kept_metadata(document.get("metadata")),
        "spec": spec,
    });
    let mut notes = Vec::new();
    if document.get("status").is_some() {
        notes.push("status: dropped (written by the controller)".to_owned());
    }
    if let Some(schema) = crd_schema(kind)
        && let Some(spec_schema) = schema.pointer("/properties/spec")
        && let Some(spec) = converted.get_mut("spec")
    {
        prune(spec_schema, spec, "spec", &mut notes);
    }
    let problems = match validate::check_document(&converted) {
        Verdict::Invalid(problems) => problems,
        Verdict::Valid | Verdict::Skipped => Vec::new(),
    };
    Conversion::Converted { document: converted, notes, problems }
}

fn kept_metadata(metadata: Option<&Value>) -> Value {
    let mut kept = Map::new();
    for key in KEPT_METADATA {
        if let Some(value) = metadata.and_then(|m| m.get(key)) {
            kept.insert(key.to_owned(), value.clone());
        }
    }
    if let Some(annotations) = kept.get_mut("annotations").and_then(Value::as_object_mut) {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            kept.remove("annotations");
        }
    }
    Value::Object(kept)
}

/// The OpenAPI schema of the stoker CRD of this kind.
fn crd_schema(kind: &str) -> Option<Value> {
    let crd = apis::crds().into_iter().find(|crd| crd.spec.names.kind == kind)?;
    let schema = crd.spec.versions.first()?.schema.as_ref()?.open_api_v3_schema.as_ref()?;
    serde_json::to_value(schema).ok()
}

/// Removes every field of `value` the schema does not define, noting each by its path.
fn prune(schema: &Value, value: &mut Value, path: &str, notes: &mut Vec<String>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(fields) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let mut dropped = Vec::new();
            for (key, field) in fields.iter_mut() {
                let field_path = format!("{path}.{key}");
                match (properties.and_then(|p| p.get(key)), additional) {
                    (Some(field_schema), _) | (None, Some(field_schema)) => {
                        prune(field_schema, field, &field_path, notes);
                    }
                    (None, None) => dropped.push(key.clone()),
                }
            }
            for key in dropped {
                fields.remove(&key);
                notes.push(format!("{path}.{key}: dropped (stoker has no such field)"));
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter_mut().enumerate() {
                    prune(item_schema, item, &format!("{path}[{index}]"), notes);
                }
            }
        }
        _ => {}
    }
}

/// Whether a key or string anywhere in the document is `needle`.
fn mentions(document: &Value, needle: &str) -> bool {
    match document {
        Value::String(text) => text == needle,
        Value::Array(items) => items.iter().any(|item| mentions(item, needle)),
        Value::Object(fields) => fields.iter().any(|(key, value)| key == needle || mentions(value, needle)),
        _ => false,
    }
}

/// Converts every document of every file, writing the result as multi-document YAML to standard
/// output and notes to standard error; fails if a document was refused or would be rejected.
pub fn run(documents: &[Document]) -> Result<ExitCode, CliError> {
    let mut failed = false;
    let mut output = Vec::new();
    for document in documents {
        let label = format!("{} {}", document.label, document.describe());
        failed |= convert_into(&label, &document.value, &mut output);
    }
    for document in output {
        print!("---\n{}", crate::yaml::to_string(&document)?);
    }
    Ok(if failed { ExitCode::from(super::exit::INVALID) } else { ExitCode::SUCCESS })
}

/// Converts one document, reports on standard error, and collects what is to be written;
/// returns whether the document failed.
fn convert_into(label: &str, document: &Value, output: &mut Vec<Value>) -> bool {
    match convert_document(document) {
        Conversion::Converted { document, notes, problems } => {
            report(label, &notes);
            for problem in &problems {
                eprintln!("{label}: error: {problem}");
            }
            output.push(document);
            !problems.is_empty()
        }
        Conversion::Unchanged { document, notes } => {
            report(label, &notes);
            output.push(document);
            false
        }
        Conversion::Omitted { reason } => {
            eprintln!("{label}: left out: {reason}");
            false
        }
        Conversion::Refused { reason } => {
            eprintln!("{label}: error: {reason}");
            true
        }
    }
}

fn report(label: &str, notes: &[String]) {
    for note in notes {
        eprintln!("{label}: {note}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(yaml: &str) -> Conversion {
        convert_document(&serde_saphyr::from_str(yaml).unwrap())
    }

    /// Karpenter's getting-started NodePool as `kubectl get -o yaml` prints it, plus a field
    /// stoker lacks.
    const KARPENTER_NODEPOOL: &str = "
apiVersion: karpenter.sh/v1
kind: NodePool
metadata:
  name: default
  uid: 0b8e6a9e-1111-2222-3333-444455556666
  resourceVersion: '12345'
  generation: 3
  creationTimestamp: '2026-01-01T00:00:00Z'
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: '{}'
    team: platform
spec:
  template:
    metadata:
      labels: {workload-class: general}
    spec:
      requirements:
      - {key: kubernetes.io/arch, operator: In, values: [amd64]}
      - {key: karpenter.sh/capacity-type, operator: In, values: [spot, on-demand]}
      - {key: karpenter.k8s.aws/instance-category, operator: In, values: [c, m, r]}
      - {key: karpenter.k8s.aws/instance-family, operator: Exists, minValues: 5}
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      expireAfter: 720h
  limits: {cpu: 1000}
  disruption:
    consolidationPolicy: WhenEmptyOrUnderutilized
    consolidateAfter: 1m
    budgets:
    - {nodes: 10%}
status:
  resources: {cpu: '16'}
";

    const KARPENTER_NODECLASS: &str = "
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {name: default}
spec:
  role: KarpenterNodeRole-demo
  amiSelectorTerms: [{alias: al2023@latest}]
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
  instanceStorePolicy: RAID0
  capacityReservationSelectorTerms: [{tags: {team: ml}, ownerID: '123456789012'}, {id: cr-0abc}]
  context: capacity-reservation-context
  metadataOptions: {httpTokens: required, httpPutResponseHopLimit: 1}
  kubelet: {maxPods: 110, cpuCFSQuota: true}
  blockDeviceMappings: [{deviceName: /dev/xvda, rootVolume: true, ebs: {volumeSize: 100Gi, volumeInitializationRate: 300}}]
";

    fn converted(conversion: Conversion) -> (Value, Vec<String>, Vec<String>) {
        match conversion {
            Conversion::Converted { document, notes, problems } => (document, notes, problems),
            other => panic!("expected a conversion, got {other:?}"),
        }
    }

    #[test]
    fn a_karpenter_nodepool_becomes_a_valid_stoker_nodepool() {
        let (document, notes, problems) = converted(convert(KARPENTER_NODEPOOL));
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!(document["apiVersion"], "stoker.dev/v1alpha1");
        assert_eq!(document["spec"]["template"]["spec"]["nodeClassRef"]["group"], "stoker.dev");
        assert_eq!(document["spec"]["template"]["spec"]["requirements"][3]["minValues"], 5);
        assert_eq!(document["spec"]["disruption"]["budgets"][0]["nodes"], "10%");
        assert_eq!(document["metadata"], json!({"name": "default", "annotations": {"team": "platform"}}));
        assert!(document.get("status").is_none());
        assert_eq!(notes, vec!["status: dropped (written by the controller)"]);
        // A static pool stays static.
        let static_pool = KARPENTER_NODEPOOL.replace("  limits: {cpu: 1000}", "  limits: {nodes: 5}\n  replicas: 3");
        let (document, _, problems) = converted(convert(&static_pool));
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!(document["spec"]["replicas"], 3);
    }

    #[test]
    fn fields_stoker_lacks_are_dropped_and_named_at_any_depth() {
        let (document, notes, problems) = converted(convert(KARPENTER_NODECLASS));
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!(document["spec"]["kubelet"], json!({"maxPods": 110, "cpuCFSQuota": true}));
        assert_eq!(document["spec"]["blockDeviceMappings"][0]["ebs"], json!({"volumeSize": "100Gi"}));
        assert_eq!(document["spec"]["instanceStorePolicy"], "RAID0");
        let reservations = json!([{"tags": {"team": "ml"}, "ownerID": "123456789012"}, {"id": "cr-0abc"}]);
        assert_eq!(document["spec"]["capacityReservationSelectorTerms"], reservations);
        assert!(document["spec"].get("context").is_none());
        assert_eq!(
            notes,
            vec![
                "spec.blockDeviceMappings[0].ebs.volumeInitializationRate: dropped (stoker has no such field)",
                "spec.context: dropped (stoker has no such field)",
            ]
        );
    }

    #[test]
    fn what_the_apiserver_would_refuse_is_reported() {
        let (_, _, problems) = converted(convert(&KARPENTER_NODEPOOL.replace("nodes: 10%", "nodes: 150%")));
        assert!(problems.iter().any(|p| p.starts_with("spec.disruption.budgets[0].nodes")), "{problems:?}");
    }

    #[test]
    fn a_term_emptied_by_dropping_is_a_problem_not_a_silent_change() {
        // A selector field of a Karpenter release newer than this stoker.
        let yaml = KARPENTER_NODECLASS.replace("[{alias: al2023@latest}]", "[{imageFamily: golden}]");
        let (_, notes, problems) = converted(convert(&yaml));
        assert!(notes.contains(&"spec.amiSelectorTerms[0].imageFamily: dropped (stoker has no such field)".into()));
        assert!(!problems.is_empty(), "an empty AMI term must not pass");
    }

    #[test]
    fn other_documents_pass_through_with_a_note_about_the_nodepool_label() {
        let deployment = "
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      nodeSelector: {karpenter.sh/nodepool: default}
";
        match convert(deployment) {
            Conversion::Unchanged { document, notes } => {
                assert_eq!(document, serde_saphyr::from_str::<Value>(deployment).unwrap());
                assert_eq!(notes.len(), 1);
                assert!(notes[0].contains("stoker.dev/nodepool"), "{notes:?}");
            }
            other => panic!("expected the document unchanged, got {other:?}"),
        }
        assert!(
            matches!(convert("apiVersion: v1\nkind: ConfigMap\n"), Conversion::Unchanged { notes, .. } if notes.is_empty())
        );
    }

    #[test]
    fn older_karpenter_versions_and_nodeclaims_are_not_converted() {
        assert!(matches!(convert("apiVersion: karpenter.sh/v1beta1\nkind: NodePool\n"), Conversion::Refused { .. }));
        assert!(matches!(
            convert("apiVersion: karpenter.k8s.aws/v1beta1\nkind: EC2NodeClass\n"),
            Conversion::Refused { .. }
        ));
        assert!(matches!(convert("apiVersion: karpenter.sh/v1\nkind: NodeClaim\n"), Conversion::Omitted { .. }));
        assert!(matches!(convert("apiVersion: karpenter.sh/v1\nkind: NodeOverlay\n"), Conversion::Refused { .. }));
    }

    #[test]
    fn a_karpenter_node_overlay_becomes_a_stoker_one() {
        let (document, notes, problems) = converted(convert(
            "apiVersion: karpenter.sh/v1alpha1\nkind: NodeOverlay\nmetadata: {name: savings}\nspec:\n  weight: 5\n  requirements: [{key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}]\n  priceAdjustment: '-20%'\n",
        ));
        assert_eq!(document["apiVersion"], "stoker.dev/v1alpha1");
        assert_eq!(document["spec"]["priceAdjustment"], "-20%");
        assert!(notes.is_empty() && problems.is_empty(), "{notes:?} {problems:?}");
    }
}

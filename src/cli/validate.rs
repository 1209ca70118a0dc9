//! `stoker validate -f FILE`: checks manifests offline the way the apiserver and the controllers
//! would, so an edit can be checked before it reaches a cluster.
//!
//! Each stoker document goes through the same stages as on a cluster: schema defaults, the
//! structural schema (types, enums, ranges, patterns), the CEL rules (`x-kubernetes-validations`),
//! then the checks only stoker makes (cron expressions, time zones, dates, overlay quantities).
//! Documents of other kinds are skipped, so a file can mix a WarmPool with the Deployment it
//! serves.

use std::process::ExitCode;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::cel::{Validator, apply_defaults};
use serde::Deserialize;
use serde_json::Value;

use super::{CliError, input::Document};
use crate::{
    apis::{self, NodeOverlay, WarmPool, validation},
    controllers::warmpool::windows::Windows,
    scheduling::overlays::Overlay,
};

/// The outcome of checking one document.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A stoker resource with no problems.
    Valid,
    /// Not a stoker resource; nothing to check.
    Skipped,
    /// A stoker resource with these problems, each naming its field.
    Invalid(Vec<String>),
}

/// Checks one document (already parsed from YAML).
pub fn check_document(document: &Value) -> Verdict {
    let api_version = document.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind = document.get("kind").and_then(Value::as_str).unwrap_or_default();
    let crds = apis::crds();
    let Some(crd) = crds.iter().find(|crd| served_as(crd, api_version, kind)) else {
        if ["karpenter.sh/", "karpenter.k8s.aws/"].iter().any(|group| api_version.starts_with(group)) {
            return Verdict::Invalid(vec![format!(
                "apiVersion: {api_version} {kind} is Karpenter's; rewrite it as stoker's with `stoker convert -f FILE`"
            )]);
        }
        if api_version.starts_with(&format!("{}/", apis::labels::GROUP)) {
            return Verdict::Invalid(vec![format!("apiVersion/kind: {api_version} {kind} is not a stoker resource")]);
        }
        return Verdict::Skipped;
    };
    let Some(schema) =
        crd.spec.versions.first().and_then(|v| v.schema.as_ref()).and_then(|s| s.open_api_v3_schema.as_ref())
    else {
        return Verdict::Invalid(vec![format!("{kind}: the generated CRD has no schema")]);
    };
    let schema = match serde_json::to_value(schema) {
        Ok(schema) => schema,
        Err(error) => return Verdict::Invalid(vec![format!("{kind}: cannot read the CRD schema: {error}")]),
    };
    let defaulted = apply_defaults(&schema, document);

    let mut problems = structural_problems(&schema, &defaulted);
    if let Err(errors) = Validator::new().validate(&schema, &defaulted, None) {
        problems.extend(errors.iter().map(ToString::to_string));
    }
    if problems.is_empty() {
        problems = match kind {
            "NodePool" => typed(&defaulted, validation::nodepool_errors),
            // The controller's own parse, so validate refuses exactly what the controller would.
            // Any workload size: validation checks the spec, not the cluster it will read.
            "WarmPool" => {
                typed(&defaulted, |pool: &WarmPool| Windows::new(&pool.spec, &Ok(0)).err().unwrap_or_default())
            }
            "NodeOverlay" => {
                typed(&defaulted, |overlay: &NodeOverlay| Overlay::from_api(overlay).err().into_iter().collect())
            }
            _ => Vec::new(),
        };
    }
    if problems.is_empty() { Verdict::Valid } else { Verdict::Invalid(problems) }
}

fn served_as(crd: &CustomResourceDefinition, api_version: &str, kind: &str) -> bool {
    crd.spec.names.kind == kind
        && crd.spec.versions.iter().any(|version| format!("{}/{}", crd.spec.group, version.name) == api_version)
}

/// Types, enums, ranges and patterns: what the apiserver's structural schema checks.
fn structural_problems(schema: &Value, document: &Value) -> Vec<String> {
    // The apiserver ignores metadata's schema and validates it itself; so do we.
    let mut schema = schema.clone();
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        properties.remove("metadata");
    }
    match jsonschema::validator_for(&schema) {
        Ok(validator) => validator
            .iter_errors(document)
            .map(|error| format!("{}: {}", json_pointer_to_path(error.instance_path().as_str()), error))
            .collect(),
        Err(error) => vec![format!("cannot compile the CRD schema: {error}")],
    }
}

/// `/spec/budgets/0/nodes` → `spec.budgets[0].nodes`, as the apiserver names fields.
fn json_pointer_to_path(pointer: &str) -> String {
    let mut path = String::new();
    for segment in pointer.split('/').skip(1) {
        if segment.parse::<usize>().is_ok() {
            path.push_str(&format!("[{segment}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&segment.replace("~1", "/").replace("~0", "~"));
        }
    }
    if path.is_empty() { "<root>".into() } else { path }
}

/// Deserializes into the typed resource and runs the checks the schema cannot express.
fn typed<T: for<'de> Deserialize<'de>>(document: &Value, check: fn(&T) -> Vec<validation::FieldError>) -> Vec<String> {
    match serde_path_to_error::deserialize::<_, T>(document) {
        Ok(resource) => check(&resource).iter().map(ToString::to_string).collect(),
        Err(error) => vec![format!("{}: {}", error.path(), error.inner())],
    }
}

/// Checks every document and prints a line per document; fails (exit code 3) if any is invalid.
pub fn run(documents: &[Document]) -> Result<ExitCode, CliError> {
    let mut invalid = 0;
    for document in documents {
        let (label, name) = (&document.label, document.describe());
        match check_document(&document.value) {
            Verdict::Valid => println!("{label}: {name}: valid"),
            Verdict::Skipped => println!("{label}: {name}: skipped (not a stoker resource)"),
            Verdict::Invalid(problems) => {
                invalid += 1;
                println!("{label}: {name}: invalid");
                for problem in problems {
                    println!("  - {problem}");
                }
            }
        }
    }
    Ok(if invalid == 0 { ExitCode::SUCCESS } else { ExitCode::from(super::exit::INVALID) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Verdict {
        check_document(&serde_saphyr::from_str(yaml).unwrap())
    }

    fn problems(yaml: &str) -> Vec<String> {
        match check(yaml) {
            Verdict::Invalid(problems) => problems,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    const NODEPOOL: &str = "
apiVersion: stoker.dev/v1alpha1
kind: NodePool
metadata: {name: spot}
spec:
  template:
    spec:
      nodeClassRef: {group: stoker.dev, kind: EC2NodeClass, name: default}
      requirements:
      - {key: karpenter.sh/capacity-type, operator: In, values: [spot]}
";

    #[test]
    fn valid_nodepool_passes() {
        assert_eq!(check(NODEPOOL), Verdict::Valid);
    }

    #[test]
    fn other_kinds_are_skipped() {
        assert_eq!(check("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}"), Verdict::Skipped);
    }

    #[test]
    fn schema_errors_name_the_field() {
        let found = problems(&format!("{NODEPOOL}  weight: 101\n"));
        assert!(found.iter().any(|p| p.starts_with("spec.weight:")), "{found:?}");
    }

    #[test]
    fn cel_errors_name_the_field() {
        let found = problems(&NODEPOOL.replace("operator: In, values: [spot]", "operator: In"));
        assert!(
            found.iter().any(|p| p.contains("spec.template.spec.requirements[0]") && p.contains("must have values")),
            "{found:?}"
        );
    }

    #[test]
    fn cron_and_timezone_errors_name_the_field() {
        let found = problems(
            "
apiVersion: stoker.dev/v1alpha1
kind: WarmPool
metadata: {name: w, namespace: default}
spec:
  resources: {requests: {cpu: 500m}}
  schedules:
  - {name: a, start: '0 8 * * mon-fri', duration: 10h, timezone: Europe/Berln, replicas: 3}
",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("spec.schedules[0].timezone:"), "{found:?}");
    }

    #[test]
    fn refuses_what_the_controller_refuses() {
        let warmpool = |extra: &str| {
            format!(
                "
apiVersion: stoker.dev/v1alpha1
kind: WarmPool
metadata: {{name: w, namespace: default}}
spec:
  resources: {{requests: {{cpu: '0', memory: 1Gi}}}}
{extra}"
            )
        };
        // Zero-sized pause pods cannot be counted out of a capacity.
        let found =
            problems(&warmpool("  schedules: [{name: a, start: '0 8 * * *', duration: 1h, capacity: {cpu: '8'}}]\n"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("spec.schedules[0].capacity.cpu:"), "{found:?}");
        // Past the schema's bound: the apiserver's CEL rule and the controller both refuse it.
        let found = problems(&warmpool("  leadTime: 2300000000h\n"));
        assert!(found.iter().any(|p| p.contains("spec.leadTime")), "{found:?}");
        let found = problems(&NODEPOOL.replace("requirements:", "expireAfter: 9000h\n      requirements:"));
        assert!(found.iter().any(|p| p.contains("spec.template.spec.expireAfter")), "{found:?}");
    }

    #[test]
    fn karpenter_manifests_point_to_convert() {
        let problems = problems("apiVersion: karpenter.sh/v1\nkind: NodePool\nmetadata: {name: default}\n");
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("Karpenter's") && problems[0].contains("stoker convert"), "{problems:?}");
    }

    #[test]
    fn unknown_stoker_kind_is_an_error() {
        assert!(matches!(check("apiVersion: stoker.dev/v1alpha1\nkind: NodeGroup\n"), Verdict::Invalid(_)));
    }

    #[test]
    fn json_pointers_become_field_paths() {
        assert_eq!(json_pointer_to_path("/spec/budgets/0/nodes"), "spec.budgets[0].nodes");
        assert_eq!(json_pointer_to_path("/spec/labels/stoker.dev~1x"), "spec.labels.stoker.dev/x");
        assert_eq!(json_pointer_to_path(""), "<root>");
    }
}
